//! One TLS stack for the whole process: rustls with ring, for both the AWS SDK and the Vault
//! client. No I/O.

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// Installs ring as rustls' process-wide provider (reqwest needs one). Safe to call many times.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTPS client handed to the AWS SDK. The SDK is built without a default client, so every
/// `SdkConfig` of this crate must get this one.
pub fn aws_http_client() -> SharedHttpClient {
    install_crypto_provider();
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
