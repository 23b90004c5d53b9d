//! A fake [`HealthChecker`] for unit tests of what drives it.

use super::*;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

/// Healthy unless told otherwise, per address: refused (field 0) or timing out (field 1).
/// Field 2 records every check: whom, and when.
#[derive(Debug, Default, Clone)]
pub struct FakeHealth(
    pub Arc<Mutex<HashSet<IpAddr>>>,
    pub Arc<Mutex<HashSet<IpAddr>>>,
    pub Arc<Mutex<Vec<(SocketAddr, tokio::time::Instant)>>>,
);

impl FakeHealth {
    /// Checks of `addr` time out (a starved or hung worker), or not.
    pub fn set_timing_out(&self, addr: IpAddr, timing_out: bool) {
        let mut set = self.1.lock().unwrap();
        if timing_out {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }
    pub fn set_unhealthy(&self, addr: IpAddr, unhealthy: bool) {
        let mut set = self.0.lock().unwrap();
        if unhealthy {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }
    /// Every check fails with a local error (poold out of file descriptors), or not.
    pub fn all_local_errors(&self, local: bool) {
        let mut set = self.0.lock().unwrap();
        if local {
            set.insert(IpAddr::V4(Ipv4Addr::BROADCAST));
        } else {
            set.remove(&IpAddr::V4(Ipv4Addr::BROADCAST));
        }
    }
    /// Makes every address unhealthy, including ones not handed out yet.
    pub fn all_unhealthy(&self) {
        self.0
            .lock()
            .unwrap()
            .insert(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
}

#[async_trait]
impl HealthChecker for FakeHealth {
    async fn check(&self, target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
        self.2
            .lock()
            .unwrap()
            .push((target, tokio::time::Instant::now()));
        if self.1.lock().unwrap().contains(&target.ip()) {
            return Err(HealthFailure::Worker(ProbeError::Timeout {
                timeout: spec.timeout,
            }));
        }
        let set = self.0.lock().unwrap();
        if set.contains(&IpAddr::V4(Ipv4Addr::BROADCAST)) {
            Err(HealthFailure::Local(ProbeError::Io {
                step: ProbeStep::Connect(target),
                source: std::io::Error::from_raw_os_error(libc::EMFILE),
            }))
        } else if set.contains(&target.ip()) || set.contains(&IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
            Err(HealthFailure::Worker(ProbeError::Io {
                step: ProbeStep::Connect(target),
                source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
            }))
        } else {
            Ok(())
        }
    }
}
