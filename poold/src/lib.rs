//! poold: an IPVS-fronted prefork container pool manager.
//!
//! Invariant: `unsafe` lives only in `sandbox::sys` (the only module that allows it), except
//! the calls of its `unsafe fn fork`, each allowed at the call with a `SAFETY:` comment.
#![deny(unsafe_code)]

pub mod balancer;
pub mod cli;
pub mod config;
pub mod conn_limit;
pub mod control;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod runtime;
pub mod sandbox;
pub mod service_manager;
pub mod state_dir;
pub mod supervisor;
pub mod upgrade;
pub mod worker_output;
