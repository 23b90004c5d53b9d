//! What the IPVS balancer owns in the kernel, as the state record keeps it: the virtual
//! services it made and the addresses it bound. A poold started after a crash removes what
//! an earlier run recorded and its own run does not configure, whichever balancer it uses;
//! it never touches an IPVS entry or address that no run of poold recorded.

use super::{errno, link_index, ENODEV, VIP_DEVICE};
use crate::balancer::BalancerError;
use crate::config::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use tracing::{info, warn};

/// The kernel entries poold's IPVS balancer made (a superset while one is being made or
/// removed: recorded before it is made, forgotten after it is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsRecord {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub services: BTreeSet<RecordedService>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub vips: BTreeSet<RecordedVip>,
}

/// An IPVS virtual service: enough to delete it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordedService {
    pub listen: SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
}

/// An address poold bound as /32 to `device`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordedVip {
    pub address: IpAddr,
    pub device: String,
}

impl IpvsRecord {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.vips.is_empty()
    }

    /// Everything either record names.
    pub fn union(&self, other: &IpvsRecord) -> IpvsRecord {
        IpvsRecord {
            services: self.services.union(&other.services).copied().collect(),
            vips: self.vips.union(&other.vips).cloned().collect(),
        }
    }
}

/// Where the IPVS balancer keeps what it owns (the state record, written at once).
pub trait IpvsLedger: Send + Sync {
    /// This run's balancer owns `owned` now.
    fn record_owned(&self, owned: IpvsRecord);
    /// What an earlier run recorded that no cleanup has removed yet.
    fn left_by_earlier_runs(&self) -> IpvsRecord;
    /// After a cleanup: what is still left of [`IpvsLedger::left_by_earlier_runs`].
    fn set_left_by_earlier_runs(&self, left: IpvsRecord);
}

/// What this run of poold uses: the IPVS virtual services its balancer makes (none with
/// the proxy) and the listen addresses of all its services.
#[derive(Clone, Debug, Default)]
pub struct ThisRun {
    pub ipvs_services: BTreeSet<RecordedService>,
    pub addresses: BTreeSet<IpAddr>,
}

impl ThisRun {
    /// What `services` use under a balancer of `kind`.
    pub fn new(
        services: &[crate::config::ServiceConfig],
        kind: crate::balancer::BalancerKind,
    ) -> Self {
        let ipvs = kind == crate::balancer::BalancerKind::Ipvs;
        Self {
            ipvs_services: services
                .iter()
                .filter(|_| ipvs)
                .map(|s| RecordedService {
                    listen: s.listen,
                    protocol: s.protocol,
                })
                .collect(),
            addresses: services.iter().map(|s| s.listen.ip()).collect(),
        }
    }
}

/// What a cleanup of `recorded` does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Recorded virtual services this run does not make.
    pub services: Vec<RecordedService>,
    /// Recorded addresses no service of this run listens on.
    pub vips: Vec<RecordedVip>,
    /// Recorded addresses a service of this run listens on that its balancer does not own
    /// (the proxy's): they stay, recorded, until a run no longer uses them.
    pub kept: IpvsRecord,
}

/// Decides what to remove of what earlier runs recorded.
pub fn plan_removal(recorded: &IpvsRecord, this_run: &ThisRun) -> Removal {
    let owned_by_this_run: BTreeSet<IpAddr> = this_run
        .ipvs_services
        .iter()
        .map(|s| s.listen.ip())
        .collect();
    let mut removal = Removal {
        services: recorded
            .services
            .iter()
            .filter(|s| !this_run.ipvs_services.contains(s))
            .copied()
            .collect(),
        ..Removal::default()
    };
    for vip in &recorded.vips {
        if !this_run.addresses.contains(&vip.address) {
            removal.vips.push(vip.clone());
        } else if !owned_by_this_run.contains(&vip.address) {
            removal.kept.vips.insert(vip.clone());
        }
    }
    removal
}

/// Removes what `recorded` names and `this_run` does not use, with a netlink client of its
/// own (the IPVS one only if a virtual service is to go: a host without IPVS cleans up a
/// record that names none); returns what is left (kept addresses, failed removals). Without
/// an IPVS balancer in this run, poold's VIP device goes too once no address is left on it.
pub async fn remove_leftovers(recorded: &IpvsRecord, this_run: &ThisRun) -> IpvsRecord {
    let removal = plan_removal(recorded, this_run);
    let mut left = removal.kept;
    if !removal.services.is_empty() {
        let services = removal.services.clone();
        let failed = tokio::task::spawn_blocking(move || delete_services(&services))
            .await
            .unwrap_or_else(|_| removal.services.clone());
        left.services.extend(failed);
    }
    if removal.vips.is_empty() {
        return left;
    }
    let (connection, netlink, _) = match rtnetlink::new_connection() {
        Ok(parts) => parts,
        Err(error) => {
            warn!(%error, "rtnetlink: the addresses of an earlier run stay bound");
            left.vips.extend(removal.vips);
            return left;
        }
    };
    let connection = tokio::spawn(connection);
    let mut devices = BTreeSet::new();
    for vip in removal.vips {
        match unbind(&netlink, &vip).await {
            Ok(()) => {
                info!(address = %vip.address, device = %vip.device, "unbound an address an earlier run left");
                devices.insert(vip.device);
            }
            Err(error) => {
                warn!(address = %vip.address, device = %vip.device, %error, "unbinding an address an earlier run left failed");
                left.vips.insert(vip);
            }
        }
    }
    if this_run.ipvs_services.is_empty() && devices.contains(VIP_DEVICE) {
        delete_device_if_empty(&netlink).await;
    }
    connection.abort();
    left
}

/// Deletes each of `services` (one already gone counts as deleted); the ones that failed.
fn delete_services(services: &[RecordedService]) -> Vec<RecordedService> {
    let mut client = match ipvs::Client::new() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "IPVS is not available: the virtual services an earlier run recorded stay recorded");
            return services.to_vec();
        }
    };
    let mut failed = Vec::new();
    for service in services {
        let key = match service.protocol {
            Protocol::Tcp => ipvs::ServiceKey::tcp(service.listen.ip(), service.listen.port()),
        };
        match client.delete_service(&key) {
            Ok(()) => {
                info!(listen = %service.listen, "removed an IPVS service an earlier run left")
            }
            Err(ipvs::Error::ServiceNotFound { .. }) => {}
            Err(error) => {
                warn!(listen = %service.listen, %error, "removing an IPVS service an earlier run left failed");
                failed.push(*service);
            }
        }
    }
    failed
}

/// Unbinds `vip`'s /32 from its device (gone already: fine).
async fn unbind(netlink: &rtnetlink::Handle, vip: &RecordedVip) -> Result<(), BalancerError> {
    let Some(index) = link_index(netlink, &vip.device).await? else {
        return Ok(());
    };
    super::unbind_address(netlink, index, vip.address, "*").await
}

/// Deletes poold's VIP device when no virtual address is bound to it any more.
async fn delete_device_if_empty(netlink: &rtnetlink::Handle) {
    let Ok(Some(index)) = link_index(netlink, VIP_DEVICE).await else {
        return;
    };
    if super::has_addresses(netlink, index).await {
        return;
    }
    match netlink.link().del(index).execute().await {
        Err(error) if errno(&error) != Some(ENODEV) => {
            warn!(%error, "deleting {VIP_DEVICE} failed")
        }
        _ => info!("deleted {VIP_DEVICE}, which an earlier run left"),
    }
}

#[cfg(test)]
mod tests;
