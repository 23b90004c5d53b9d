//! Worker networking: a named network namespace per worker (`<state>/netns/poold-<id>`), a
//! veth pair whose host end (`<link prefix><id>`) joins the service bridge, the worker's
//! address from the service subnet with a default route via the bridge, and an address
//! allocator that quarantines freed addresses.
//!
//! Namespaces are made on a throwaway thread (unshare + bind mount of
//! /proc/thread-self/ns/net), never by forking inside the runtime. Netlink work inside a
//! namespace runs on a throwaway thread that setns()es first and then opens its own
//! rtnetlink socket on a current-thread runtime, so sockets land in the right namespace.
//! All functions here are blocking; the async API calls them via spawn_blocking.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::{Result, SandboxError};

/// Time source of the address allocator (injectable for tests).
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Hands out worker addresses from a subnet. The first host address is the gateway (the
/// bridge). Never-used addresses go first; a released address is reused only after
/// `quarantine`, because IPVS revives a deleted destination's old connection entries when
/// the same address:port comes back soon (DESIGN 4).
#[derive(Debug)]
pub struct AddressAllocator {
    subnet: Ipv4Net,
    quarantine: Duration,
    clock: std::sync::Arc<dyn Clock>,
    in_use: HashSet<Ipv4Addr>,
    released: VecDeque<(Ipv4Addr, Instant)>,
    /// Offset of the next never-used host address.
    next_fresh: u32,
}

impl AddressAllocator {
    pub fn new(subnet: Ipv4Net, quarantine: Duration, clock: std::sync::Arc<dyn Clock>) -> Self {
        AddressAllocator {
            subnet: subnet.trunc(),
            quarantine,
            clock,
            in_use: HashSet::new(),
            released: VecDeque::new(),
            next_fresh: 2,
        }
    }

    /// The bridge's address: the subnet's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.subnet)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    fn host_count(&self) -> u32 {
        // Offsets 1..=last usable; the broadcast address is excluded.
        (1u64 << (32 - self.subnet.prefix_len()))
            .saturating_sub(1)
            .min(u32::MAX as u64) as u32
    }

    /// Takes an address: a never-used one if any, else the longest-released one whose
    /// quarantine is over.
    pub fn allocate(&mut self) -> Result<Ipv4Addr> {
        let base = u32::from(self.subnet.network());
        while self.next_fresh < self.host_count() {
            let addr = Ipv4Addr::from(base + self.next_fresh);
            self.next_fresh += 1;
            if !self.in_use.contains(&addr) && !self.released.iter().any(|(a, _)| *a == addr) {
                self.in_use.insert(addr);
                return Ok(addr);
            }
        }
        let now = self.clock.now();
        if let Some(&(addr, at)) = self.released.front() {
            if now.duration_since(at) >= self.quarantine {
                self.released.pop_front();
                self.in_use.insert(addr);
                return Ok(addr);
            }
        }
        Err(SandboxError::AddressesExhausted {
            subnet: self.subnet.to_string(),
            quarantined: self.released.len(),
        })
    }

    /// Marks `addr` as in use (e.g. a live worker adopted after a restart).
    pub fn reserve(&mut self, addr: Ipv4Addr) {
        self.released.retain(|(a, _)| *a != addr);
        self.in_use.insert(addr);
    }

    /// Returns `addr`; it is quarantined before it can be handed out again.
    pub fn release(&mut self, addr: Ipv4Addr) {
        if self.in_use.remove(&addr) {
            self.released.push_back((addr, self.clock.now()));
        }
    }
}

pub(crate) fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Runs `f` with an rtnetlink handle on a throwaway thread, inside the network namespace at
/// `netns` (or the caller's namespace when `None`).
pub(crate) fn with_netlink<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let netns = netns.map(Path::to_path_buf);
    std::thread::spawn(move || -> Result<T> {
        if let Some(ns) = &netns {
            let file =
                std::fs::File::open(ns).map_err(|e| SandboxError::io("open netns", ns, e))?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| SandboxError::net("setns", ns.display().to_string(), e))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| SandboxError::net("runtime", "netlink", e))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| SandboxError::net("connect", "rtnetlink", e))?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
    .join()
    .unwrap_or_else(|_| Err(SandboxError::net("thread", "netlink", "panicked")))
}

async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(SandboxError::net("get link", name, e)),
    }
}

/// Creates the bridge `name` with `gateway/prefix` and sets it up, if it does not exist.
pub(crate) fn ensure_bridge(name: &str, subnet: Ipv4Net) -> Result<()> {
    let name = name.to_string();
    with_netlink(None, move |h| async move {
        let index = match link_index(&h, &name).await? {
            Some(i) => i,
            None => {
                match h.link().add(LinkBridge::new(&name).build()).execute().await {
                    Err(e) if errno(&e) != Some(libc::EEXIST) => {
                        return Err(SandboxError::net("create bridge", &name, e))
                    }
                    _ => {}
                }
                link_index(&h, &name)
                    .await?
                    .ok_or_else(|| SandboxError::net("create bridge", &name, "vanished"))?
            }
        };
        let gw = gateway_of(subnet);
        match h
            .address()
            .add(index, IpAddr::V4(gw), subnet.prefix_len())
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(libc::EEXIST) => {
                return Err(SandboxError::net(
                    "add bridge address",
                    format!("{name} {gw}"),
                    e,
                ))
            }
            _ => {}
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| SandboxError::net("set bridge up", &name, e))
    })
}

/// Deletes the link `name`; a missing link is fine.
pub(crate) fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    with_netlink(None, move |h| async move {
        let Some(index) = link_index(&h, &name).await? else {
            return Ok(());
        };
        match h.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(libc::ENODEV) => {
                Err(SandboxError::net("delete link", &name, e))
            }
            _ => Ok(()),
        }
    })
}

/// Names of links in the caller's namespace starting with `prefix`.
pub(crate) fn links_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let prefix = prefix.to_string();
    with_netlink(None, move |h| async move {
        let mut names = Vec::new();
        let mut links = h.link().get().execute();
        while let Some(m) = links
            .try_next()
            .await
            .map_err(|e| SandboxError::net("list links", "*", e))?
        {
            for a in m.attributes {
                if let netlink_packet_route::link::LinkAttribute::IfName(n) = a {
                    if n.starts_with(&prefix) {
                        names.push(n);
                    }
                }
            }
        }
        Ok(names)
    })
}

/// Creates a network namespace bound at `path` (on a throwaway thread).
pub(crate) fn create_netns(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create", dir, e))?;
    }
    std::fs::File::create(path).map_err(|e| SandboxError::io("create", path, e))?;
    let p = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| SandboxError::net("unshare", p.display().to_string(), e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| SandboxError::net("bind netns", p.display().to_string(), e))
    })
    .join()
    .unwrap_or_else(|_| Err(SandboxError::net("thread", "netns", "panicked")));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a namespace made by [`create_netns`]; a missing one is fine.
pub(crate) fn delete_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(SandboxError::net(
                "unmount netns",
                path.display().to_string(),
                e,
            ))
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SandboxError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

/// What [`setup_worker_net`] made.
#[derive(Debug, Clone)]
pub(crate) struct WorkerNet {
    pub netns: PathBuf,
    pub host_link: String,
}

/// Makes the namespace, the veth pair (host end on `bridge`), the worker's address and
/// default route. On error everything made so far is removed.
pub(crate) fn setup_worker_net(
    netns: &Path,
    host_link: &str,
    bridge: &str,
    subnet: Ipv4Net,
    addr: Ipv4Addr,
) -> Result<WorkerNet> {
    let net = WorkerNet {
        netns: netns.to_path_buf(),
        host_link: host_link.to_string(),
    };
    let made = (|| {
        create_netns(netns)?;
        let peer = format!("{}x", &host_link[..host_link.len().min(14)]);
        let (host, br, ns) = (
            host_link.to_string(),
            bridge.to_string(),
            netns.to_path_buf(),
        );
        let peer2 = peer.clone();
        with_netlink(None, move |h| async move {
            h.link()
                .add(LinkVeth::new(&host, &peer).build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("create veth", &host, e))?;
            let nsfile = std::fs::File::open(&ns).map_err(|e| SandboxError::io("open", &ns, e))?;
            use std::os::fd::AsRawFd;
            h.link()
                .set(
                    LinkUnspec::new_with_name(&peer)
                        .setns_by_fd(nsfile.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| SandboxError::net("move veth peer", &peer, e))?;
            let bridge_index = link_index(&h, &br)
                .await?
                .ok_or_else(|| SandboxError::net("find bridge", &br, "missing"))?;
            h.link()
                .set(
                    LinkUnspec::new_with_name(&host)
                        .controller(bridge_index)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| SandboxError::net("attach veth to bridge", &host, e))
        })?;
        with_netlink(Some(netns), move |h| async move {
            let lo = link_index(&h, "lo")
                .await?
                .ok_or_else(|| SandboxError::net("find", "lo", "missing"))?;
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("set up", "lo", e))?;
            let idx = link_index(&h, &peer2)
                .await?
                .ok_or_else(|| SandboxError::net("find", &peer2, "missing in netns"))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).name("eth0").build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("rename", &peer2, e))?;
            h.address()
                .add(idx, IpAddr::V4(addr), subnet.prefix_len())
                .execute()
                .await
                .map_err(|e| SandboxError::net("add address", addr.to_string(), e))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("set up", "eth0", e))?;
            h.route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway_of(subnet))
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| {
                    SandboxError::net("add default route", gateway_of(subnet).to_string(), e)
                })
        })
    })();
    if let Err(e) = made {
        let _ = teardown_worker_net(&net);
        return Err(e);
    }
    Ok(net)
}

/// Removes the veth and the namespace; missing pieces are fine.
pub(crate) fn teardown_worker_net(net: &WorkerNet) -> Result<()> {
    let link = delete_link(&net.host_link);
    let ns = delete_netns(&net.netns);
    link.and(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug)]
    struct FakeClock(Mutex<Instant>);
    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }
    impl FakeClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    fn alloc(prefix: u8, q: u64) -> (AddressAllocator, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
        let net: Ipv4Net = format!("10.213.9.0/{prefix}").parse().unwrap();
        (
            AddressAllocator::new(net, Duration::from_secs(q), clock.clone()),
            clock,
        )
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let (mut a, _) = alloc(29, 150);
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 213, 9, 1));
        let got: Vec<_> = (0..5).map(|_| a.allocate().unwrap()).collect();
        let want: Vec<_> = (2..=6).map(|i| Ipv4Addr::new(10, 213, 9, i)).collect();
        assert_eq!(got, want);
        assert!(matches!(
            a.allocate(),
            Err(SandboxError::AddressesExhausted { quarantined: 0, .. })
        ));
    }

    #[test]
    fn released_addresses_wait_out_the_quarantine() {
        let (mut a, clock) = alloc(30, 150); // only .2 is a worker address
        let first = a.allocate().unwrap();
        a.release(first);
        let e = a.allocate().unwrap_err();
        assert!(
            matches!(e, SandboxError::AddressesExhausted { quarantined: 1, .. }),
            "{e}"
        );
        clock.advance(Duration::from_secs(149));
        assert!(a.allocate().is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(a.allocate().unwrap(), first);
    }

    #[test]
    fn fresh_addresses_go_before_quarantined_ones() {
        let (mut a, clock) = alloc(28, 150);
        let x = a.allocate().unwrap();
        a.release(x);
        clock.advance(Duration::from_secs(1000));
        let y = a.allocate().unwrap();
        assert_ne!(
            x, y,
            "a never-used address comes first even after the quarantine"
        );
        a.reserve(x);
        assert!((0..11).all(|_| a.allocate().map(|n| n != x).unwrap_or(true)));
    }
}
