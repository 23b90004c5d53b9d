//! IPVS over generic netlink: a pure codec (no I/O) and a blocking client on top of it.
//!
//! ```no_run
//! use ipvs::{Client, Destination, Service, ServiceKey};
//! let mut ipvs = Client::new()?;
//! let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
//! ipvs.add_service(&Service::new(key, "wlc"))?;
//! ipvs.add_destination(&key, &Destination::new("10.0.1.2".parse().unwrap(), 8080))?;
//! for dest in ipvs.destinations(&key)? {
//!     println!("{}:{} active {}", dest.addr, dest.port, dest.active_conns);
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```

pub mod cli;
mod client;
pub mod codec;
mod error;
pub mod model;

pub use client::Client;
pub use error::{Error, Result};
pub use model::*;
