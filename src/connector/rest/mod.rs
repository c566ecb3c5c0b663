//! The generic engine of polled REST upstreams: it executes a declarative
//! profile (the ITSM's, billing's) against an instance.

pub mod client;
pub mod poll;
pub mod profile;
pub mod records;
pub mod task;
pub mod write;
pub mod writer;
