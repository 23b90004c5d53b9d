//! The sandbox's one error type: every variant says which step failed and on what.

use std::path::PathBuf;

use super::{ContainerId, HelperError};

/// Errors of the sandbox module.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A container of an earlier run is not (or no longer) what its record says.
    #[error("container {container} cannot be adopted: {reason}")]
    NotAdoptable {
        container: super::ContainerId,
        reason: AdoptRefusal,
    },

    /// The container spec is invalid; `field` names the spec field, `reason` what was expected.
    #[error("invalid container spec: field `{field}`: {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    /// The sandbox configuration is invalid.
    #[error("invalid sandbox config: field `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// A filesystem operation on a path failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Preparing a root filesystem image (tarball) failed.
    #[error(transparent)]
    Image(#[from] super::rootfs::ImageError),

    /// A cgroup operation failed.
    #[error("cgroup {cgroup}: {action}: {source}")]
    Cgroup {
        cgroup: String,
        action: &'static str,
        #[source]
        source: CgroupFailure,
    },

    /// A netlink / network namespace operation failed.
    #[error("network: {action} ({object}): {source}")]
    Network {
        action: &'static str,
        object: String,
        #[source]
        source: NetFailure,
    },

    /// The configured bridge name belongs to a link poold did not make and cannot share.
    #[error(
        "bridge {bridge:?} {problem}: poold uses only a bridge it made itself or an empty one \
         (no ports, no addresses); pick another network.bridge name"
    )]
    ForeignBridge {
        bridge: String,
        problem: ForeignLink,
    },

    /// The subnet has more slices than the bridge's name leaves room for: slice `i > 0`'s
    /// bridge is `<bridge>-<i>`, and a link name has at most 15 bytes.
    #[error(
        "bridge name {bridge:?} is too long for {subnet}: its {slices} slices need bridges up to \
         {last:?} ({} bytes; a link name has at most {}); shorten the name or the subnet",
        last.len(),
        super::slices::MAX_LINK_NAME
    )]
    SliceBridgeName {
        bridge: String,
        subnet: ipnet::Ipv4Net,
        slices: u64,
        last: String,
    },

    /// Installing or removing the containers' nftables table failed.
    #[error("firewall: {action} nftables table inet {table}: {source}")]
    Firewall {
        table: String,
        action: &'static str,
        #[source]
        source: super::firewall::NftError,
    },

    /// The address pool of the service subnet is exhausted (free addresses may be quarantined).
    #[error("no free address in {subnet} ({quarantined} in quarantine)")]
    AddressesExhausted { subnet: String, quarantined: usize },

    /// The container helper process could not be started.
    #[error("starting container helper {exe}: {source}")]
    HelperSpawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The container's setup inside its namespaces failed (the helper reported `source`).
    #[error("container {container}: setup failed: {source}")]
    Setup {
        container: ContainerId,
        #[source]
        source: HelperError,
    },

    /// Talking to the container helper over its control socket failed.
    #[error("container {container}: control channel: {source}")]
    Control {
        container: ContainerId,
        #[source]
        source: ControlError,
    },

    /// A blocking step run on tokio's blocking pool panicked or was cancelled.
    #[error("{action}: {source}")]
    Task {
        action: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },

    /// Sending a signal failed.
    #[error("container {container}: signal {signal}: {source}")]
    Signal {
        container: ContainerId,
        signal: String,
        #[source]
        source: nix::Error,
    },

    /// The container's seccomp filter could not be compiled.
    #[error("compiling the container's seccomp filter: {source}")]
    Seccomp {
        #[source]
        source: seccompiler::Error,
    },

    /// Some teardown steps failed; each entry names the object and the error.
    #[error("{subject}: teardown incomplete: {}", joined(failures))]
    Teardown {
        /// `container <id>`, or `orphans`.
        subject: String,
        failures: Vec<SandboxError>,
    },
}

/// What went wrong on a container helper's control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the plan: {0}")]
    EncodePlan(#[source] serde_json::Error),
    #[error("unexpected message {line:?}")]
    Unexpected { line: String },
    #[error("the helper exited during setup ({status:?})")]
    HelperExited {
        status: Option<std::process::ExitStatus>,
    },
}

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupFailure {
    #[error(transparent)]
    Kernel(#[from] cgroups_rs::fs::error::Error),
    #[error("the {0} controller is not mounted")]
    NotMounted(&'static str),
    #[error("processes left: {0:?}")]
    ProcessesLeft(Vec<u64>),
}

/// Why a netlink or network namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetFailure {
    #[error(transparent)]
    Netlink(#[from] rtnetlink::Error),
    #[error(transparent)]
    Errno(#[from] nix::errno::Errno),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the netlink thread panicked")]
    ThreadPanicked,
    #[error("not found")]
    Missing,
    #[error("another program created a link of that name at the same time")]
    Raced,
}

/// Why an existing link cannot be poold's bridge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForeignLink {
    #[error("is a {kind}, not a bridge")]
    NotABridge { kind: String },
    #[error("has port {port:?}, which poold did not attach")]
    ForeignPort { port: String },
    #[error("has address {address}, which poold did not add")]
    ForeignAddress { address: String },
}

impl SandboxError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SandboxError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn spec(field: &'static str, reason: impl Into<String>) -> Self {
        SandboxError::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn cgroup(
        cgroup: &str,
        action: &'static str,
        source: impl Into<CgroupFailure>,
    ) -> Self {
        SandboxError::Cgroup {
            cgroup: cgroup.to_string(),
            action,
            source: source.into(),
        }
    }

    pub(crate) fn net(
        action: &'static str,
        object: impl Into<String>,
        source: impl Into<NetFailure>,
    ) -> Self {
        SandboxError::Network {
            action,
            object: object.into(),
            source: source.into(),
        }
    }
}

fn joined(errors: &[SandboxError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// Result alias of the sandbox module.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Why a recorded container is not adopted (its leftovers are removed as orphans).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptRefusal {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("pid {pid} is another process now (started at tick {found}, recorded {recorded})")]
    PidReused { pid: u32, recorded: u64, found: u64 },
    #[error("process {pid} is not in its cgroup {cgroup}")]
    NotInCgroup { pid: u32, cgroup: String },
    #[error("the record names {field} {found:?}, expected {expected:?}")]
    Mismatch {
        field: &'static str,
        found: String,
        expected: String,
    },
}
