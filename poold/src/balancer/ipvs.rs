//! The kernel IPVS balancer, on the project's `ipvs` library: one virtual service per
//! service (TCP VIP:port, MASQ to the workers' own addresses), the VIP bound as /32 to a
//! dummy device `pdvip0` (or to `lo` where the kernel has no dummy links), and the sysctls
//! kube-proxy sets for the same job. Behind LVS directors in direct-routing mode
//! (`upstream = "dr"`) the host also stops answering ARP for those addresses.
//!
//! Everything acts on the network namespace of the thread that called [`IpvsBalancer::new`]
//! (the netlink sockets and the /proc/sys/net files are bound to it there).

use super::{
    BackendStats, BackendStatsTable, Balancer, BalancerError, BalancerKind, VirtualService,
};
use crate::config::Upstream;
use async_trait::async_trait;
use futures::TryStreamExt;
use ipvs::{Client, Destination, ForwardMethod, Service, ServiceKey};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub mod record;

pub use record::{IpvsLedger, IpvsRecord};

/// The device virtual addresses are bound to (like kube-proxy's kube-ipvs0).
pub const VIP_DEVICE: &str = "pdvip0";

/// (path under /proc/sys, value): forwarding for MASQ; conntrack so IPVS connections can be
/// SNATed (hairpin); expire connections of removed real servers and quiescent templates
/// instead of letting clients hang on them.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/vs/conntrack", "1"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
];

/// (path under /proc/sys, value) for a real server behind direct-routing directors: the
/// host must take packets for the virtual addresses (bound on [`VIP_DEVICE`]) without
/// claiming them on the shared segment, where they are the director's. The kernel takes the
/// larger of `all` and the receiving (arp_ignore) or sending (arp_announce) device's value,
/// so the setting on the uplink counts, not the one on `pdvip0`: poold sets `all`.
/// arp_ignore 1: answer ARP only for addresses of the interface asked on.
/// arp_announce 2: never use a virtual address as the source of an ARP request (peers learn
/// the sender's address from it).
pub const DR_ARP_SYSCTLS: &[(&str, u32)] = &[
    ("net/ipv4/conf/all/arp_ignore", 1),
    ("net/ipv4/conf/all/arp_announce", 2),
];

/// The ARP sysctls poold raised for direct routing, with the values to restore: open files,
/// so the restore reaches the namespace they were set in from any thread.
#[derive(Debug, Default)]
struct ArpQuiet {
    raised: Vec<(std::fs::File, String, u32)>,
}

impl ArpQuiet {
    /// Raises each of [`DR_ARP_SYSCTLS`] that is below its value (a stricter setting stays).
    fn raise(&mut self) -> Result<(), BalancerError> {
        use std::io::{Read, Seek, Write};
        if !self.raised.is_empty() {
            return Ok(());
        }
        for (path, wanted) in DR_ARP_SYSCTLS {
            let file = format!("/proc/sys/{path}");
            let fail = |e: std::io::Error| kernel("*", "sysctl", format!("{file}: {e}"));
            let mut handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)
                .map_err(fail)?;
            let mut text = String::new();
            handle.read_to_string(&mut text).map_err(fail)?;
            let current: u32 = text
                .trim()
                .parse()
                .map_err(|_| kernel("*", "sysctl", format!("{file}: not a number: {text:?}")))?;
            if current >= *wanted {
                continue;
            }
            handle.rewind().map_err(fail)?;
            handle
                .write_all(wanted.to_string().as_bytes())
                .map_err(fail)?;
            info!(sysctl = %file, from = current, to = wanted, "direct routing: not answering ARP for virtual addresses");
            self.raised.push((handle, file, current));
        }
        Ok(())
    }

    /// Puts back what [`ArpQuiet::raise`] changed.
    fn restore(&mut self) {
        use std::io::{Seek, Write};
        for (mut handle, file, previous) in self.raised.drain(..).rev() {
            let restored = handle
                .rewind()
                .and_then(|()| handle.write_all(previous.to_string().as_bytes()));
            match restored {
                Ok(()) => info!(sysctl = %file, to = previous, "restored"),
                Err(error) => warn!(sysctl = %file, %error, "cannot restore"),
            }
        }
    }
}

const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ENODEV: i32 = 19;

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// Why a virtual address cannot be used with IPVS, if it cannot.
pub fn vip_problem(listen: SocketAddr) -> Option<String> {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Some(format!(
            "{listen} is a loopback address: the kernel drops loopback-sourced packets that IPVS \
             MASQ routes to another network namespace; use an address poold binds as /32 to \
             {VIP_DEVICE}, or balancer = \"proxy\""
        )),
        IpAddr::V4(ip) if ip.is_unspecified() => Some(format!(
            "{listen}: a virtual service needs a concrete address"
        )),
        IpAddr::V6(_) => Some(format!(
            "{listen}: IPv6 virtual services are not supported yet"
        )),
        _ => None,
    }
}

/// Whether a virtual address (not the kernel's own IPv6 link-local one) is still bound to
/// the device `index`; when unsure, yes (the device stays).
async fn has_addresses(netlink: &rtnetlink::Handle, index: u32) -> bool {
    use netlink_packet_route::address::AddressAttribute;
    let mut addresses = netlink
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    loop {
        match addresses.try_next().await {
            Ok(Some(message)) => {
                let bound = message.attributes.iter().any(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V6(v6)) => {
                        v6.segments()[0] & 0xffc0 != 0xfe80
                    }
                    AddressAttribute::Address(IpAddr::V4(_)) => true,
                    _ => false,
                });
                if bound {
                    return true;
                }
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Unbinds the /32 `address` from the device `index` (not bound: fine).
async fn unbind_address(
    netlink: &rtnetlink::Handle,
    index: u32,
    address: IpAddr,
    service: &str,
) -> Result<(), BalancerError> {
    let mut addresses = netlink
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(address)
        .execute();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(|e| kernel(service, "list VIP", e))?
    {
        if message.header.prefix_len != 32 {
            continue;
        }
        match netlink.address().del(message).execute().await {
            Err(error) if errno(&error) != Some(EADDRNOTAVAIL) => {
                return Err(kernel(service, "unbind VIP", error));
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug)]
struct VipDevice {
    name: String,
    index: u32,
    /// It is poold's `pdvip0` (made by this run or an earlier one that crashed): deleted
    /// when the last service goes and no virtual address is left on it (another instance's).
    ours: bool,
}

/// The IPVS balancer.
pub struct IpvsBalancer {
    /// Jobs for the thread that owns the IPVS client: every call runs there, one at a
    /// time, so poold's thread count does not grow with the calls a large pool makes at
    /// once (tokio's blocking pool grew to 22 threads). The thread ends when this is dropped.
    ipvs_jobs: std::sync::mpsc::Sender<IpvsJob>,
    netlink: rtnetlink::Handle,
    connection: JoinHandle<()>,
    device: VipDevice,
    services: Mutex<HashMap<String, ServiceKey>>,
    upstream: Upstream,
    arp: Mutex<ArpQuiet>,
    /// Where the listen addresses of the virtual services this balancer may have made are
    /// recorded (before one is made, after one is gone), so a later run can remove them.
    ledger: Option<Arc<dyn IpvsLedger>>,
    owned: Mutex<BTreeSet<SocketAddr>>,
}

impl std::fmt::Debug for IpvsBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsBalancer")
            .field("device", &self.device)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for IpvsBalancer {
    fn drop(&mut self) {
        self.connection.abort();
        self.arp.lock().expect("arp lock").restore();
    }
}

/// One call on the IPVS client, run on its thread.
type IpvsJob = Box<dyn FnOnce(&mut Client) + Send>;

/// The thread that owns `client` and runs the calls sent to it until every sender is gone.
fn start_ipvs_thread(
    mut client: Client,
) -> Result<std::sync::mpsc::Sender<IpvsJob>, BalancerError> {
    let (jobs, queue) = std::sync::mpsc::channel::<IpvsJob>();
    std::thread::Builder::new()
        .name("poold-ipvs".into())
        .spawn(move || {
            for job in queue {
                job(&mut client);
            }
        })
        .map_err(|e| kernel("*", "start the IPVS thread", e))?;
    Ok(jobs)
}

/// The index of the link called `name`, if there is one.
async fn link_index(netlink: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, BalancerError> {
    match netlink
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(message) => Ok(message.map(|m| m.header.index)),
        Err(error) if errno(&error) == Some(ENODEV) => Ok(None),
        Err(error) => Err(kernel("*", "get link", format!("{name}: {error}"))),
    }
}

fn kernel(service: &str, operation: &'static str, error: impl std::fmt::Display) -> BalancerError {
    BalancerError::Kernel {
        service: service.to_owned(),
        operation,
        message: error.to_string(),
    }
}

fn map_ipvs(
    service: &VirtualService,
    backend: Option<SocketAddr>,
    operation: &'static str,
    error: ipvs::Error,
) -> BalancerError {
    match (error, backend) {
        (ipvs::Error::ServiceNotFound { .. }, _) => BalancerError::NoSuchService {
            service: service.name.clone(),
        },
        (ipvs::Error::DestinationNotFound { .. }, Some(backend)) => {
            BalancerError::no_such_backend(service, backend)
        }
        (ipvs::Error::AlreadyExists { .. }, Some(backend)) => BalancerError::BackendExists {
            service: service.name.clone(),
            backend,
        },
        (error, _) => kernel(&service.name, operation, error),
    }
}

fn key_of(service: &VirtualService) -> ServiceKey {
    ServiceKey::tcp(service.listen.ip(), service.listen.port())
}

fn destination(backend: SocketAddr, weight: u32) -> Destination {
    let mut dest = Destination::new(backend.ip(), backend.port());
    dest.forward = ForwardMethod::Masquerade;
    dest.weight = i32::try_from(weight).unwrap_or(i32::MAX);
    dest
}

impl IpvsBalancer {
    /// Opens IPVS ([`BalancerError::Kernel`] naming "IPVS is not available" when the kernel
    /// has none), sets the sysctls and prepares the VIP device.
    pub async fn new() -> Result<Self, BalancerError> {
        Self::with_upstream(Upstream::None).await
    }

    /// As [`IpvsBalancer::new`], for a host whose virtual addresses `upstream` sends packets to.
    pub async fn with_upstream(upstream: Upstream) -> Result<Self, BalancerError> {
        let client = Client::new().map_err(|e| kernel("*", "open IPVS", e))?;
        // Synchronously, on the caller's thread: /proc/sys/net is the caller's namespace.
        for (path, value) in SYSCTLS {
            let file = format!("/proc/sys/{path}");
            std::fs::write(&file, value)
                .map_err(|e| kernel("*", "sysctl", format!("{file} = {value}: {e}")))?;
        }
        let (connection, netlink, _) =
            rtnetlink::new_connection().map_err(|e| kernel("*", "rtnetlink", e))?;
        let connection = tokio::spawn(connection);
        let device = match Self::prepare_device(&netlink).await {
            Ok(device) => device,
            Err(error) => {
                connection.abort();
                return Err(error);
            }
        };
        info!(device = %device.name, %upstream, "IPVS balancer ready");
        Ok(Self {
            ipvs_jobs: start_ipvs_thread(client)?,
            netlink,
            connection,
            device,
            services: Mutex::default(),
            upstream,
            arp: Mutex::default(),
            ledger: None,
            owned: Mutex::default(),
        })
    }

    /// Records what this balancer makes in the kernel to `ledger` from now on.
    pub fn recording_to(mut self, ledger: Arc<dyn IpvsLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Adds (`owned`) or forgets `listen` among the virtual services this balancer may
    /// have made and records them if that changed (under the lock: writes never interleave).
    fn set_owned(&self, listen: SocketAddr, owned: bool) {
        let mut set = self.owned.lock().expect("owned lock");
        let changed = if owned {
            set.insert(listen)
        } else {
            set.remove(&listen)
        };
        if let (true, Some(ledger)) = (changed, &self.ledger) {
            ledger.record_owned(IpvsRecord {
                services: set
                    .iter()
                    .map(|&listen| record::RecordedService {
                        listen,
                        protocol: crate::config::Protocol::Tcp,
                    })
                    .collect(),
                vips: set
                    .iter()
                    .map(|listen| record::RecordedVip {
                        address: listen.ip(),
                        device: self.device.name.clone(),
                    })
                    .collect(),
            });
        }
    }

    async fn prepare_device(netlink: &rtnetlink::Handle) -> Result<VipDevice, BalancerError> {
        let (name, ours) = match link_index(netlink, VIP_DEVICE).await? {
            // The name is poold's: left by an earlier run (a crash) or another instance.
            Some(_) => (VIP_DEVICE, true),
            None => match netlink
                .link()
                .add(rtnetlink::LinkDummy::new(VIP_DEVICE).build())
                .execute()
                .await
            {
                Ok(()) => (VIP_DEVICE, true),
                Err(error) => {
                    warn!(%error, "cannot create dummy device {VIP_DEVICE}; binding virtual addresses to lo");
                    ("lo", false)
                }
            },
        };
        let index = link_index(netlink, name)
            .await?
            .ok_or_else(|| kernel("*", "get link", format!("{name} vanished")))?;
        netlink
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| kernel("*", "set link up", format!("{name}: {e}")))?;
        Ok(VipDevice {
            name: name.to_owned(),
            index,
            ours,
        })
    }

    /// The device the virtual addresses are bound to.
    pub fn vip_device(&self) -> &str {
        &self.device.name
    }

    async fn bind_vip(&self, service: &VirtualService) -> Result<(), BalancerError> {
        match self
            .netlink
            .address()
            .add(self.device.index, service.listen.ip(), 32)
            .execute()
            .await
        {
            Err(error) if errno(&error) != Some(EEXIST) => Err(kernel(
                &service.name,
                "bind VIP",
                format!("{} on {}: {error}", service.listen.ip(), self.device.name),
            )),
            _ => Ok(()),
        }
    }

    async fn device_has_addresses(&self) -> bool {
        has_addresses(&self.netlink, self.device.index).await
    }

    async fn unbind_vip(&self, service: &VirtualService) -> Result<(), BalancerError> {
        unbind_address(
            &self.netlink,
            self.device.index,
            service.listen.ip(),
            &service.name,
        )
        .await
    }

    /// After `service` left the IPVS table: unbinds its address unless a service of this
    /// run still uses it (another port on the same VIP); with no service left, restores
    /// the ARP sysctls and deletes poold's VIP device if nothing else is bound to it.
    async fn release_address(&self, service: &VirtualService) -> Result<(), BalancerError> {
        let (vip_still_used, none_left) = {
            let services = self.services.lock().expect("services lock");
            let vip = service.listen.ip();
            let used = services
                .values()
                .any(|key| matches!(key, ServiceKey::Inet { addr, .. } if *addr == vip));
            (used, services.is_empty())
        };
        if !vip_still_used {
            self.unbind_vip(service).await?;
        }
        if none_left {
            self.arp.lock().expect("arp lock").restore();
        }
        if none_left && self.device.ours && !self.device_has_addresses().await {
            match self.netlink.link().del(self.device.index).execute().await {
                Err(error) if errno(&error) != Some(ENODEV) => {
                    warn!(%error, "deleting {VIP_DEVICE} failed")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs a blocking IPVS call on the IPVS thread, off the async threads.
    async fn ipvs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, ipvs::Error> + Send + 'static,
    ) -> Result<Result<T, ipvs::Error>, BalancerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ipvs_jobs
            .send(Box::new(move |client| {
                let _ = reply.send(f(client));
            }))
            .map_err(|_| kernel("*", "IPVS call", "the IPVS thread is gone"))?;
        answer
            .await
            .map_err(|_| kernel("*", "IPVS call", "the IPVS thread ended during the call"))
    }
}

#[async_trait]
impl Balancer for IpvsBalancer {
    fn kind(&self) -> BalancerKind {
        BalancerKind::Ipvs
    }

    async fn ensure_service(&self, service: &VirtualService) -> Result<(), BalancerError> {
        if let Some(reason) = vip_problem(service.listen) {
            return Err(kernel(&service.name, "add service", reason));
        }
        if self.upstream == Upstream::Dr {
            // Before the address is bound: one ARP answer for it would take the director's
            // traffic (peers cache the answer).
            self.arp.lock().expect("arp lock").raise()?;
        }
        // Recorded before it exists: a crash from here on leaves nothing unrecorded.
        self.set_owned(service.listen, true);
        self.bind_vip(service).await?;
        let key = key_of(service);
        let definition = Service::new(key, service.scheduler.clone());
        let leftovers = self
            .ipvs(move |client| match client.add_service(&definition) {
                Ok(()) => Ok(Vec::new()),
                Err(ipvs::Error::AlreadyExists { .. }) => {
                    // Left by an earlier run: take it over with its real servers, which
                    // keep forwarding; the pool keeps its adopted workers' and removes
                    // the rest (backend_stats, remove_backend).
                    client.edit_service(&definition)?;
                    Ok(client
                        .destinations(&key)?
                        .into_iter()
                        .map(|d| SocketAddr::new(d.addr, d.port))
                        .collect())
                }
                Err(error) => Err(error),
            })
            .await?
            .map_err(|e| map_ipvs(service, None, "add service", e))?;
        if !leftovers.is_empty() {
            info!(service = %service.name, ?leftovers, "took over an existing IPVS service with its real servers");
        }
        self.services
            .lock()
            .expect("services lock")
            .insert(service.name.clone(), key);
        info!(service = %service.name, listen = %service.listen, scheduler = %service.scheduler, device = %self.device.name, "IPVS service ready");
        Ok(())
    }

    /// Weight 0 for every real server: new connections find no destination (and, with no
    /// local listener on the VIP, are refused); established ones continue.
    async fn stop_accepting(&self, service: &VirtualService) -> Result<(), BalancerError> {
        let key = key_of(service);
        self.ipvs(move |client| {
            for dest in client.destinations(&key)? {
                let backend = SocketAddr::new(dest.addr, dest.port);
                client.edit_destination(&key, &destination(backend, 0))?;
            }
            Ok(())
        })
        .await?
        .map_err(|e| map_ipvs(service, None, "stop accepting", e))
    }

    async fn remove_service(&self, service: &VirtualService) -> Result<(), BalancerError> {
        let key = key_of(service);
        let deleted = self.ipvs(move |client| client.delete_service(&key)).await?;
        self.services
            .lock()
            .expect("services lock")
            .remove(&service.name);
        self.release_address(service).await?;
        match deleted {
            Ok(()) | Err(ipvs::Error::ServiceNotFound { .. }) => {
                self.set_owned(service.listen, false)
            }
            Err(_) => {}
        }
        deleted.map_err(|e| map_ipvs(service, None, "delete service", e))
    }

    async fn add_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let key = key_of(service);
        self.ipvs(move |client| client.add_destination(&key, &destination(backend, weight)))
            .await?
            .map_err(|e| map_ipvs(service, Some(backend), "add real server", e))
    }

    async fn set_weight(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let key = key_of(service);
        self.ipvs(move |client| client.edit_destination(&key, &destination(backend, weight)))
            .await?
            .map_err(|e| map_ipvs(service, Some(backend), "set weight", e))
    }

    async fn remove_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
    ) -> Result<(), BalancerError> {
        let key = key_of(service);
        self.ipvs(move |client| client.delete_destination(&key, backend.ip(), backend.port()))
            .await?
            .map_err(|e| map_ipvs(service, Some(backend), "delete real server", e))
    }

    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<BackendStatsTable, BalancerError> {
        let key = key_of(service);
        // The library answers a missing service with ServiceNotFound, never an empty list.
        let destinations = self
            .ipvs(move |client| client.destinations(&key))
            .await?
            .map_err(|e| map_ipvs(service, None, "list real servers", e))?;
        Ok(destinations
            .into_iter()
            .map(|d| {
                let stats = BackendStats {
                    weight: u32::try_from(d.weight).unwrap_or(0),
                    active: u64::from(d.active_conns),
                    inactive: u64::from(d.inactive_conns),
                    total: d.stats.conns,
                    out_bytes: d.stats.outbytes,
                };
                (SocketAddr::new(d.addr, d.port), stats)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
