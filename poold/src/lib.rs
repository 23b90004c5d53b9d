//! poold: an IPVS-fronted prefork container pool manager.

pub mod config;
