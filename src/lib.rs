//! csmd, the customer service management daemon: it ingests events from an
//! ITSM, monitoring and billing, keeps its state in sled, and e-mails
//! customers their notices and reports.
//!
//! Data flows one way: sources (webhooks, pollers) → store journal →
//! processors → outbox → transports.

pub mod app;
pub mod cli;
pub mod config;
pub mod connector;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod report;
pub mod store;

/// Selects rustls' crypto (ring) for the process, once; every HTTP and SMTP
/// client calls this before it is built, so the library works whoever
/// embeds it.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
