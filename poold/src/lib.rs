//! poold: an IPVS-fronted prefork container pool manager.
//!
//! Invariant: `unsafe` lives only in `sandbox::sys` (the only module that allows it).
#![deny(unsafe_code)]

pub mod sandbox;
