//! IPVS over generic netlink: a pure codec (no I/O) and a blocking client on top of it.
//!
//! - [`model`]: the table as plain data (services, destinations, counters, timeouts, sync
//!   daemons); serde `Serialize` for JSON listings.
//! - [`codec`]: IPVS messages and attributes on netlink-packet-core/-generic, and the
//!   conversions to and from the model. No I/O: everything is testable with bytes, including
//!   replies captured from the kernel (tests/captured/).
//! - [`Client`]: one blocking `NETLINK_GENERIC` socket (netlink-sys); resolves the "IPVS"
//!   family, sends requests with sequence numbers, reads ACKs and multi-part dumps, and
//!   turns kernel errnos into typed [`Error`]s.
//!
//! A socket acts on the network namespace it was created in, and every command (listings
//! included) needs CAP_NET_ADMIN there. `Client` is `Send`: a tokio program calls it from
//! `spawn_blocking` or a dedicated thread.
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

#![forbid(unsafe_code)]

mod client;
pub mod codec;
mod error;
pub mod model;

pub use client::Client;
pub use error::{AttrError, Error, Result};
pub use model::*;
