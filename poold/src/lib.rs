//! poold: an IPVS-fronted prefork container pool manager.

pub mod balancer;
pub mod config;
pub mod health;
pub mod supervisor;
