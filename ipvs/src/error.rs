//! The library's one error type.

#![warn(missing_docs)]

use std::net::IpAddr;

use crate::model::{AddressFamily, ServiceKey};

/// What went wrong talking to IPVS. Callers match on the typed variants; every variant
/// names the operation or object it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel has no "IPVS" generic netlink family.
    #[error("IPVS is not available: load the ip_vs module (modprobe ip_vs)")]
    NotAvailable,

    /// The kernel refused the request for lack of privilege.
    #[error("{op}: permission denied: IPVS needs CAP_NET_ADMIN in the network namespace's user namespace")]
    PermissionDenied {
        /// The command that was refused (e.g. `GET_SERVICE`).
        op: &'static str,
    },

    /// The service does not exist (ESRCH).
    #[error("{op}: no such service: {service}")]
    ServiceNotFound {
        /// The command that failed.
        op: &'static str,
        /// The service asked for.
        service: ServiceKey,
    },

    /// The destination does not exist in the service (ENOENT on a destination command).
    #[error("{op}: no such destination {} in service {service}", fmt_addr_port(addr, *port))]
    DestinationNotFound {
        /// The command that failed.
        op: &'static str,
        /// The service.
        service: ServiceKey,
        /// The destination address.
        addr: IpAddr,
        /// The destination port.
        port: u16,
    },

    /// The service or destination already exists (EEXIST).
    #[error("{op}: {what} already exists")]
    AlreadyExists {
        /// The command that failed.
        op: &'static str,
        /// What was being added, ipvsadm style (`service TCP 10.0.0.1:80`).
        what: String,
    },

    /// The kernel has no scheduler of that name (ENOENT on a service command).
    #[error("{op}: unknown scheduler {name:?} (is the ip_vs_{name} module available?)")]
    UnknownScheduler {
        /// The command that failed.
        op: &'static str,
        /// The scheduler name sent.
        name: String,
    },

    /// A socket call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done (`open netlink socket`, `send GET_SERVICE`, ...).
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The kernel answered with an error this library has no variant for.
    #[error("{op}: kernel error {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The command that failed.
        op: &'static str,
        /// The positive errno.
        errno: i32,
    },

    /// A reply's attributes do not describe a valid object.
    #[error("{op}: cannot decode the kernel's reply: {source}")]
    Attributes {
        /// The command whose reply was being read.
        op: &'static str,
        /// What was wrong with the attributes.
        #[source]
        source: AttrError,
    },

    /// A reply could not be decoded.
    #[error("{op}: cannot decode the kernel's reply: {reason}")]
    Decode {
        /// The command whose reply was being read.
        op: &'static str,
        /// What was wrong, with the attribute path where it applies.
        reason: String,
    },
}

/// Why the codec could not read an object (service, destination, ...) from its attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// A required attribute is absent.
    #[error("{object} without {attr}")]
    Missing {
        /// The object being read (`service`, `destination`, `info`, ...).
        object: &'static str,
        /// The missing attribute, in words.
        attr: &'static str,
    },

    /// A service has no scheduler name.
    #[error("service {service} without scheduler name")]
    NoScheduler {
        /// The service.
        service: ServiceKey,
    },

    /// A numeric attribute has a value this library does not know.
    #[error("{object} with {attr} {value}")]
    Unknown {
        /// The object being read.
        object: &'static str,
        /// The attribute, in words (`address family`, `unknown protocol`, ...).
        attr: &'static str,
        /// The value sent.
        value: u32,
    },

    /// An address attribute's length does not fit its family.
    #[error("address of {len} bytes for family {family:?}")]
    AddressLength {
        /// The attribute's length.
        len: usize,
        /// The family it should belong to.
        family: AddressFamily,
    },
}

fn fmt_addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
