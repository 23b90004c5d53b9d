//! poold: an IPVS-fronted prefork container pool manager.

pub mod balancer;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod sandbox;
pub mod sandbox_runtime;
pub mod supervisor;
