//! Replicates Vault / OpenBao KV v2 secrets into AWS Secrets Manager.
//!
//! One run: [`run::run`] reads the configuration, walks Vault ([`inventory`]), lists AWS
//! ([`aws`]), decides purely ([`plan`], over the data floor [`model`]), acts ([`execute`]) and
//! reports ([`report`]). The CLI (`replicator sync`) and the Lambda (`bootstrap`, [`lambda`])
//! share that one path.

pub mod aws;
pub mod aws_auth;
pub mod config;
mod events;
pub mod execute;
pub mod inventory;
pub mod lambda;
pub mod listing;
pub mod logging;
mod metrics;
pub mod model;
mod outcome;
pub mod plan;
pub mod progress;
pub mod report;
pub mod rotate;
mod rules;
pub mod run;
pub mod status;
pub mod vault;
pub mod watch;
