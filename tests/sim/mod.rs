//! Simulators of the upstream APIs csmd talks to, each a real HTTP server on
//! loopback that answers as the upstream does (status codes, headers, error
//! bodies, paging), with knobs for the failures a connector must survive.
//! Test binaries use it as `mod sim;`.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod billing;
pub mod servicenow;
