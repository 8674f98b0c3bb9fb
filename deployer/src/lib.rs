//! Deploys the vault-secrets-replicator stack into an AWS account with direct SDK calls.
//!
//! The core is pure: [`config`] validation, [`spec`] (names, tags, documents) and the
//! [`desired`] part of each resource that it makes, each resource's `diff`, [`change`]
//! rendering and the `cost` estimate. The AWS adapters live in
//! [`resources`]; [`stack`] runs them in dependency order; [`cli`] is the command line.

pub mod change;
pub mod cli;
pub mod clients;
pub mod config;
mod cost;
pub mod desired;
pub mod lambda_zip;
pub mod policy;
pub mod resources;
mod schedule;
pub mod spec;
pub mod stack;
pub mod tls_cert;
mod vault_admin;
pub mod vault_init;
