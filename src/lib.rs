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
pub mod http;
pub mod metrics;
pub mod model;
pub mod store;
