//! Container networking: a named network namespace per container (`<state>/netns/poold-<id>`), a
//! veth pair whose host end (`<link prefix><id>`) joins the service bridge, the container's
//! address from the service subnet with a default route via the bridge, and an address
//! allocator that quarantines freed addresses.
//!
//! Namespaces are made on a throwaway thread (unshare + bind mount of
//! /proc/thread-self/ns/net), never by forking inside the runtime. Netlink work inside a
//! namespace runs on a throwaway thread that setns()es first and then opens its own
//! rtnetlink socket on a current-thread runtime, so sockets land in the right namespace.
//! All functions here are blocking; the async API calls them via spawn_blocking.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAttribute, RouteProtocol, RouteType};
use netlink_packet_route::RouteNetlinkMessage;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// The container's side of its veth pair.
const CONTAINER_IF: &str = "eth0";

use super::error::{ForeignLink, NetFailure, Result, SandboxError};
use super::slices::{self, Slices};

/// Where the host's IPv4 neighbour (ARP) table limits are. The table is one for the whole
/// host: every network namespace's entries count, so each bridged container costs two (the
/// host's entry for it, and its own for the gateway). Past `gc_thresh3` (1,024 by default)
/// no new entry can be made and connections fail; past `gc_thresh2` the kernel evicts
/// entries in use, which costs ARP round trips and timeouts.
const NEIGH_DEFAULTS: &str = "/proc/sys/net/ipv4/neigh/default";

/// One neighbour-table limit: its sysctl, its value now, the value a pool needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourLimit {
    pub sysctl: &'static str,
    pub current: u64,
    pub wanted: u64,
}

/// The neighbour-table limits below what `containers` bridged containers need (two
/// entries each, twice over for surge and scaling), with what they need: `gc_thresh3` (the
/// hard limit) at twice the entries, `gc_thresh2` (the soft one) at one and a half times.
/// Empty when the limits suffice, or where the host has none to read (the files exist
/// only in the host's first network namespace).
pub fn neighbour_shortfall(containers: u64) -> Vec<NeighbourLimit> {
    neighbour_shortfall_in(Path::new(NEIGH_DEFAULTS), containers)
}

fn neighbour_shortfall_in(dir: &Path, containers: u64) -> Vec<NeighbourLimit> {
    let entries = 4 * containers;
    [
        ("gc_thresh2", entries + entries / 2),
        ("gc_thresh3", 2 * entries),
    ]
    .into_iter()
    .filter_map(|(name, wanted)| {
        let current = std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (current < wanted).then_some(NeighbourLimit {
            sysctl: name,
            current,
            wanted,
        })
    })
    .collect()
}

/// Raises the neighbour-table limits that are too low for `containers` bridged containers
/// (never lowers one); returns what it changed.
pub fn raise_neighbour_limits(containers: u64) -> Result<Vec<NeighbourLimit>> {
    let short = neighbour_shortfall(containers);
    for limit in &short {
        let path = format!("{NEIGH_DEFAULTS}/{}", limit.sysctl);
        std::fs::write(&path, limit.wanted.to_string())
            .map_err(|e| SandboxError::io("write", path, e))?;
    }
    Ok(short)
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
    .unwrap_or_else(|_| {
        Err(SandboxError::net(
            "thread",
            "netlink",
            NetFailure::ThreadPanicked,
        ))
    })
}

async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(get_link(h, name).await?.map(|m| m.header.index))
}

/// The instance's bridges: one per slice of the worker subnet (see [`super::slices`]).
#[derive(Debug, Clone)]
pub(crate) struct Bridges {
    /// `network.bridge`: slice 0's bridge, and the stem of the others' names.
    pub bridge: String,
    pub slices: Slices,
    /// The link alias (`ifalias`) poold puts on a bridge it makes: the kernel-side record
    /// that the bridge is this instance's, which survives a crash of poold.
    pub marker: String,
    /// Host veth names of this instance's containers: `<prefix><8 hex>`.
    pub port_prefix: String,
    /// This instance's nftables table (`inet poold_<link prefix>`).
    pub firewall_table: String,
    /// Host ports containers may open connections to (every other one is closed to them).
    pub allow_host_ports: Vec<u16>,
}

impl Bridges {
    /// The bridge of slice `index`.
    pub fn name(&self, index: u32) -> String {
        slices::bridge_name(&self.bridge, index)
    }

    /// What it takes to make, check, share or remove the bridge of slice `index`.
    pub fn spec(&self, index: u32) -> BridgeSpec {
        BridgeSpec {
            name: self.name(index),
            index,
            slice: self.slices.slice(index),
            subnet: self.slices.subnet(),
            marker: self.marker.clone(),
            port_prefix: self.port_prefix.clone(),
        }
    }
}

/// What poold needs to know to make, check, share or remove one bridge.
#[derive(Debug, Clone)]
pub(crate) struct BridgeSpec {
    pub name: String,
    /// The slice of the subnet it carries.
    pub index: u32,
    pub slice: Ipv4Net,
    /// The whole worker subnet (its unreachable route).
    pub subnet: Ipv4Net,
    /// See [`Bridges::marker`].
    pub marker: String,
    /// See [`Bridges::port_prefix`].
    pub port_prefix: String,
}

impl BridgeSpec {
    /// A stable, locally administered MAC address: a bridge made again after it vanished
    /// keeps the MAC its containers have in their neighbour caches, so they reach it at once.
    /// Slice 0's is the one poold gave its only bridge before there were slices.
    fn mac(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let h = match self.index {
            0 => Sha256::digest(self.marker.as_bytes()),
            i => Sha256::digest(format!("{}/{i}", self.marker).as_bytes()),
        };
        vec![0x02, h[0], h[1], h[2], h[3], h[4]]
    }

    /// The slice's gateway: its first host address, on this bridge.
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.slice.network()) + 1)
    }

    fn is_our_port(&self, name: &str) -> bool {
        is_our_port(&self.port_prefix, name)
    }
}

fn is_our_port(port_prefix: &str, name: &str) -> bool {
    name.strip_prefix(port_prefix)
        .is_some_and(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whose bridge poold runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BridgeOwnership {
    /// poold made it (it carries the marker): deleted at shutdown.
    Own,
    /// An empty bridge someone else made: poold adds only the gateway address and removes
    /// only that (if it added it), never the link.
    Borrowed { added_address: bool },
}

/// What is at the bridge's name now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BridgeFound {
    Missing,
    /// A bridge poold may use; `has_gateway` when the gateway address is already there.
    Usable {
        index: u32,
        ours: bool,
        up: bool,
        has_gateway: bool,
    },
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind(m: &LinkMessage) -> Option<&InfoKind> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn link_alias(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_controller(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(SandboxError::net("get link", name, e)),
    }
}

/// The value of IFLA_MASTER in a link dump request that asks for links on no bridge (what
/// `ip link show nomaster` sends).
const NO_CONTROLLER: u32 = u32::MAX;

/// Links the kernel's dump filter keeps (IFLA_MASTER: on this bridge, or on none with
/// [`NO_CONTROLLER`]). The kernel fills a message only for the links kept, and filling is
/// what costs: a veth's message looks its peer's namespace up among every namespace id
/// (O(links × namespaces) per dump). With 1,000 workers the watcher's unfiltered dumps
/// every 5 s were a tenth of poold's idle CPU.
async fn filtered_links(h: &Handle, controller: u32) -> Result<Vec<LinkMessage>> {
    let mut request = h.link().get();
    request
        .message_mut()
        .attributes
        .push(LinkAttribute::Controller(controller));
    request
        .execute()
        .try_collect()
        .await
        .map_err(|e| SandboxError::net("list links", "*", e))
}

/// Links on no bridge, filtered by the kernel where it can (callers still check each
/// link's controller). A kernel without the "no master" filter takes [`NO_CONTROLLER`] for
/// an index and answers nothing, while `lo` is always on no bridge: an empty answer means
/// every link has to be looked at.
async fn detached_links(h: &Handle) -> Result<Vec<LinkMessage>> {
    let links = filtered_links(h, NO_CONTROLLER).await?;
    if links.is_empty() {
        return all_links(h).await;
    }
    Ok(links)
}

async fn all_links(h: &Handle) -> Result<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| SandboxError::net("list links", "*", e))
}

/// Looks at the link named as the bridge and says whether poold may use it: a missing link,
/// poold's own bridge, or an empty foreign bridge. Anything else (another kind of link,
/// ports or addresses poold did not put there) is a [`SandboxError::ForeignBridge`].
///
/// `ports`: whether a bridge poold made (its marker) has its ports looked at too; the
/// periodic check skips them (1,000 port messages every 5 s), setup and `poold check` do not.
async fn inspect_bridge(h: &Handle, spec: &BridgeSpec, ports: PortScan) -> Result<BridgeFound> {
    let Some(link) = get_link(h, &spec.name).await? else {
        return Ok(BridgeFound::Missing);
    };
    let foreign = |problem| SandboxError::ForeignBridge {
        bridge: spec.name.clone(),
        problem,
    };
    match link_kind(&link) {
        Some(InfoKind::Bridge) => {}
        Some(kind) => {
            return Err(foreign(ForeignLink::NotABridge {
                kind: kind.to_string(),
            }))
        }
        None => {
            return Err(foreign(ForeignLink::NotABridge {
                kind: "network device".into(),
            }))
        }
    }
    let index = link.header.index;
    let ours = link_alias(&link) == Some(spec.marker.as_str());
    let scan = match ports {
        PortScan::Always => true,
        PortScan::UnlessOurs => !ours,
    };
    let ports = if scan {
        filtered_links(h, index).await?
    } else {
        Vec::new()
    };
    for port in ports {
        if link_controller(&port) == Some(index) {
            let name = link_name(&port).unwrap_or("?");
            if !spec.is_our_port(name) {
                return Err(foreign(ForeignLink::ForeignPort { port: name.into() }));
            }
        }
    }
    let gateway = IpAddr::V4(spec.gateway());
    let mut has_gateway = false;
    let mut addresses = h.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addresses
        .try_next()
        .await
        .map_err(|e| SandboxError::net("list addresses", &spec.name, e))?
    {
        let prefix = a.header.prefix_len;
        for attr in &a.attributes {
            let AddressAttribute::Address(ip) = attr else {
                continue;
            };
            // The kernel gives every up link an IPv6 link-local address of its own.
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if *ip == gateway && prefix == spec.slice.prefix_len() {
                has_gateway = true;
            } else if !link_local {
                return Err(foreign(ForeignLink::ForeignAddress {
                    address: format!("{ip}/{prefix}"),
                }));
            }
        }
    }
    Ok(BridgeFound::Usable {
        index,
        ours,
        up: link.header.flags.contains(LinkFlags::Up),
        has_gateway,
    })
}

/// Which ports [`check_bridge`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortScan {
    /// Every port: none may be foreign.
    Always,
    /// None on a bridge poold made (the watcher's periodic check).
    UnlessOurs,
}

/// Checks the link named as the bridge without changing anything (for `poold check`).
pub(crate) fn check_bridge(spec: &BridgeSpec, ports: PortScan) -> Result<BridgeFound> {
    let spec = spec.clone();
    with_netlink(None, move |h| async move {
        inspect_bridge(&h, &spec, ports).await
    })
}

/// Makes the bridge (marked as poold's, with its gateway address, up) or takes over an
/// existing one poold may use; refuses anything else and changes nothing then.
pub(crate) fn ensure_bridge(spec: &BridgeSpec) -> Result<BridgeOwnership> {
    let spec = spec.clone();
    with_netlink(None, move |h| async move {
        let name = spec.name.clone();
        let (index, ownership, has_gateway, up) =
            match inspect_bridge(&h, &spec, PortScan::Always).await? {
                BridgeFound::Usable {
                    index,
                    ours,
                    up,
                    has_gateway,
                } => {
                    let ownership = if ours {
                        BridgeOwnership::Own
                    } else {
                        BridgeOwnership::Borrowed {
                            added_address: !has_gateway,
                        }
                    };
                    (index, ownership, has_gateway, up)
                }
                BridgeFound::Missing => {
                    let bridge = LinkBridge::new(&name).address(spec.mac()).build();
                    match h.link().add(bridge).execute().await {
                        Err(e) if errno(&e) != Some(libc::EEXIST) => {
                            return Err(SandboxError::net("create bridge", &name, e))
                        }
                        Ok(()) => {}
                        // Made by someone else meanwhile: look again.
                        Err(_) => return adopt_raced(&h, &spec).await,
                    }
                    let index = link_index(&h, &name).await?.ok_or_else(|| {
                        SandboxError::net("create bridge", &name, NetFailure::Missing)
                    })?;
                    // The kernel ignores IFLA_IFALIAS when it creates a link: mark it now.
                    h.link()
                        .set(
                            LinkUnspec::new_with_index(index)
                                .alias(spec.marker.clone())
                                .build(),
                        )
                        .execute()
                        .await
                        .map_err(|e| SandboxError::net("mark bridge", &name, e))?;
                    (index, BridgeOwnership::Own, false, false)
                }
            };
        if !has_gateway {
            let gw = spec.gateway();
            match h
                .address()
                .add(index, IpAddr::V4(gw), spec.slice.prefix_len())
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
        }
        if !up {
            h.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("set bridge up", &name, e))?;
        }
        add_unreachable_route(&h, spec.subnet).await?;
        Ok(ownership)
    })
}

/// A bridge appeared between our look and our create: check it like any existing link.
async fn adopt_raced(h: &Handle, spec: &BridgeSpec) -> Result<BridgeOwnership> {
    match inspect_bridge(h, spec, PortScan::Always).await? {
        BridgeFound::Usable { ours: true, .. } => Ok(BridgeOwnership::Own),
        _ => Err(SandboxError::net(
            "create bridge",
            &spec.name,
            NetFailure::Raced,
        )),
    }
}

/// Removes what poold put on the bridge: the whole link if poold made it (it carries the
/// marker), else only the gateway address when `ownership` says poold added it. A foreign
/// link is never deleted.
pub(crate) fn remove_bridge(spec: &BridgeSpec, ownership: Option<BridgeOwnership>) -> Result<()> {
    let spec = spec.clone();
    with_netlink(None, move |h| async move {
        let Some(link) = get_link(&h, &spec.name).await? else {
            return Ok(());
        };
        let index = link.header.index;
        let is_bridge = link_kind(&link) == Some(&InfoKind::Bridge);
        if is_bridge && link_alias(&link) == Some(spec.marker.as_str()) {
            return match h.link().del(index).execute().await {
                Err(e) if errno(&e) != Some(libc::ENODEV) => {
                    Err(SandboxError::net("delete bridge", &spec.name, e))
                }
                _ => Ok(()),
            };
        }
        if is_bridge
            && ownership
                == Some(BridgeOwnership::Borrowed {
                    added_address: true,
                })
        {
            let gw = IpAddr::V4(spec.gateway());
            let mut addresses = h
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(gw)
                .execute();
            while let Some(a) = addresses
                .try_next()
                .await
                .map_err(|e| SandboxError::net("list addresses", &spec.name, e))?
            {
                if a.header.prefix_len == spec.slice.prefix_len() {
                    h.address().del(a).execute().await.map_err(|e| {
                        SandboxError::net("remove bridge address", format!("{} {gw}", spec.name), e)
                    })?;
                }
            }
        }
        Ok(())
    })
}

/// Deletes every bridge marked as this instance's (orphan cleanup: a crash left it, maybe
/// under an older `network.bridge` name); returns their names.
pub(crate) fn delete_marked_bridges(marker: &str) -> Result<Vec<String>> {
    let marker = marker.to_string();
    with_netlink(None, move |h| async move {
        let mut deleted = Vec::new();
        for link in all_links(&h).await? {
            if link_kind(&link) == Some(&InfoKind::Bridge)
                && link_alias(&link) == Some(marker.as_str())
            {
                let name = link_name(&link).unwrap_or("?").to_string();
                match h.link().del(link.header.index).execute().await {
                    Err(e) if errno(&e) != Some(libc::ENODEV) => {
                        return Err(SandboxError::net("delete bridge", name, e))
                    }
                    _ => deleted.push(name),
                }
            }
        }
        Ok(deleted)
    })
}

/// Metric of the unreachable route for the container subnet: above the bridge's connected
/// route (metric 0), so it only answers while the bridge (or its address) is gone. Then
/// packets for containers fail on the host instead of following the default route off it.
pub(crate) const UNREACHABLE_METRIC: u32 = 1_000_000;

fn unreachable_route(subnet: Ipv4Net) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet.network(), subnet.prefix_len())
        .kind(RouteType::Unreachable)
        .priority(UNREACHABLE_METRIC)
        .protocol(RouteProtocol::Static)
        .build()
}

async fn add_unreachable_route(h: &Handle, subnet: Ipv4Net) -> Result<()> {
    match h.route().add(unreachable_route(subnet)).execute().await {
        Err(e) if errno(&e) != Some(libc::EEXIST) => Err(SandboxError::net(
            "add unreachable route",
            subnet.to_string(),
            e,
        )),
        _ => Ok(()),
    }
}

/// Whether the subnet's unreachable route is there.
pub(crate) fn has_unreachable_route(subnet: Ipv4Net) -> Result<bool> {
    with_netlink(None, move |h| async move {
        let want = unreachable_route(subnet);
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(|e| SandboxError::net("list routes", subnet.to_string(), e))?
        {
            let same = |a: &RouteAttribute| want.attributes.contains(a);
            if r.header.kind == RouteType::Unreachable
                && r.header.destination_prefix_length == subnet.prefix_len()
                && r.attributes
                    .iter()
                    .filter(|a| {
                        matches!(
                            a,
                            RouteAttribute::Destination(_) | RouteAttribute::Priority(_)
                        )
                    })
                    .filter(|a| same(a))
                    .count()
                    == 2
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// Deletes the subnet's unreachable route (a missing one is fine).
pub(crate) fn delete_unreachable_route(subnet: Ipv4Net) -> Result<()> {
    with_netlink(None, move |h| async move {
        match h.route().del(unreachable_route(subnet)).execute().await {
            Err(e) if !matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => Err(
                SandboxError::net("delete unreachable route", subnet.to_string(), e),
            ),
            _ => Ok(()),
        }
    })
}

/// Puts the host veths of this instance's containers that hang off no bridge (their bridge was
/// deleted under them) back on their bridge, the one of their address's slice (`ports`: host
/// veth name → slice); returns their names. A veth `ports` does not know is left alone.
///
/// `every_link`: look at every link of the host (after a bridge was made again, when all
/// its ports were detached at once); otherwise only at veths on no bridge, filtered by the
/// kernel (the periodic check: see [`detached_links`]).
pub(crate) fn reattach_ports(
    bridges: &Bridges,
    ports: HashMap<String, u32>,
    every_link: bool,
) -> Result<Vec<String>> {
    let bridges = bridges.clone();
    with_netlink(None, move |h| async move {
        let candidates = if every_link {
            all_links(&h).await?
        } else {
            detached_links(&h).await?
        };
        // Bridge link index per slice, looked up once per call.
        let mut bridge_index: HashMap<u32, Option<u32>> = HashMap::new();
        let mut attached = Vec::new();
        for link in candidates {
            let Some(name) = link_name(&link) else {
                continue;
            };
            if !is_our_port(&bridges.port_prefix, name) {
                continue;
            }
            let Some(&slice) = ports.get(name) else {
                continue;
            };
            let bridge = match bridge_index.get(&slice) {
                Some(index) => *index,
                None => {
                    let index = link_index(&h, &bridges.name(slice)).await?;
                    bridge_index.insert(slice, index);
                    index
                }
            };
            let Some(bridge) = bridge else {
                continue;
            };
            if link_controller(&link) != Some(bridge) {
                let name = name.to_string();
                match h
                    .link()
                    .set(
                        LinkUnspec::new_with_index(link.header.index)
                            .controller(bridge)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                {
                    // Gone meanwhile (its container was torn down): nothing to attach.
                    Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                    Err(e) => return Err(SandboxError::net("attach to bridge", name, e)),
                    Ok(()) => attached.push(name),
                }
            }
        }
        Ok(attached)
    })
}

/// Whether an event may concern the bridges: a change or removal of a link named as one of
/// `bridge`'s slice bridges, any removed address (address events carry only an index), any
/// removed route.
pub(crate) fn concerns_bridge(message: &RouteNetlinkMessage, bridge: &str) -> bool {
    match message {
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
            link_name(m).is_some_and(|name| slices::slice_of_bridge(bridge, name).is_some())
        }
        RouteNetlinkMessage::DelAddress(_) | RouteNetlinkMessage::DelRoute(_) => true,
        _ => false,
    }
}

/// Watches rtnetlink events (RTNLGRP_LINK; RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV4_ROUTE for
/// removed addresses and routes) in a task and runs `check` (blocking, on the blocking pool) for each event that
/// may concern the bridges (`bridge`: slice 0's name, see [`concerns_bridge`]): once at start, after every such event, and every `fallback` in
/// case the kernel dropped events (a full multicast socket buffer). Stops when dropped.
#[derive(Debug)]
pub(crate) struct BridgeWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl BridgeWatcher {
    pub(crate) fn start(
        bridge: String,
        fallback: Duration,
        check: std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self> {
        use futures::StreamExt;
        let (conn, _handle, mut events) = rtnetlink::new_multicast_connection(&[
            rtnetlink::MulticastGroup::Link,
            rtnetlink::MulticastGroup::Ipv4Ifaddr,
            rtnetlink::MulticastGroup::Ipv4Route,
        ])
        .map_err(|e| SandboxError::net("subscribe to link events", &bridge, e))?;
        let task = tokio::spawn(async move {
            // The socket's task ends with this one, also when this one is aborted.
            let _conn = BridgeWatcher {
                task: tokio::spawn(conn),
            };
            let mut tick = tokio::time::interval(fallback);
            loop {
                let c = check.clone();
                let _ = tokio::task::spawn_blocking(move || c()).await;
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some((m, _)) => match m.payload {
                                rtnetlink::packet_core::NetlinkPayload::InnerMessage(m)
                                    if concerns_bridge(&m, &bridge) => break,
                                _ => continue,
                            },
                            None => {
                                tracing::error!(bridge = %bridge, "link event stream ended; the bridge is no longer watched");
                                return;
                            }
                        },
                        _ = tick.tick() => break,
                    }
                }
            }
        });
        Ok(BridgeWatcher { task })
    }
}

impl Drop for BridgeWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
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
                if let LinkAttribute::IfName(n) = a {
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
    .unwrap_or_else(|_| {
        Err(SandboxError::net(
            "thread",
            "netns",
            NetFailure::ThreadPanicked,
        ))
    });
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

/// What [`setup_container_net`] made.
#[derive(Debug, Clone)]
pub(crate) struct ContainerNet {
    pub netns: PathBuf,
    pub host_link: String,
}

/// Makes the namespace, the veth pair (host end on `bridge`, the bridge of `addr`'s slice),
/// the container's address in the slice and its default route via the slice's gateway. On
/// error everything made so far is removed.
pub(crate) fn setup_container_net(
    netns: &Path,
    host_link: &str,
    bridge: &BridgeSpec,
    addr: Ipv4Addr,
) -> Result<ContainerNet> {
    let (prefix, gateway) = (bridge.slice.prefix_len(), bridge.gateway());
    let bridge = bridge.name.as_str();
    let net = ContainerNet {
        netns: netns.to_path_buf(),
        host_link: host_link.to_string(),
    };
    let made = (|| {
        create_netns(netns)?;
        let (host, br, ns) = (
            host_link.to_string(),
            bridge.to_string(),
            netns.to_path_buf(),
        );
        with_netlink(None, move |h| async move {
            let bridge_index = link_index(&h, &br)
                .await?
                .ok_or_else(|| SandboxError::net("find bridge", &br, NetFailure::Missing))?;
            let nsfile = std::fs::File::open(&ns).map_err(|e| SandboxError::io("open", &ns, e))?;
            use std::os::fd::AsRawFd;
            // The peer is born in the container's namespace as eth0 and the host end on the
            // bridge and up: one request, no move between namespaces (which costs a
            // synchronize_net) and no rename.
            let peer = LinkUnspec::new_with_name(CONTAINER_IF)
                .setns_by_fd(nsfile.as_raw_fd())
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(host.clone())
                .controller(bridge_index)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(veth)
                .execute()
                .await
                .map_err(|e| SandboxError::net("create veth", &host, e))
        })?;
        with_netlink(Some(netns), move |h| async move {
            let lo = link_index(&h, "lo")
                .await?
                .ok_or_else(|| SandboxError::net("find", "lo", NetFailure::Missing))?;
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(|e| SandboxError::net("set up", "lo", e))?;
            let idx = link_index(&h, CONTAINER_IF).await?.ok_or_else(|| {
                SandboxError::net(
                    "find in the container's netns",
                    CONTAINER_IF,
                    NetFailure::Missing,
                )
            })?;
            h.address()
                .add(idx, IpAddr::V4(addr), prefix)
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
                        .gateway(gateway)
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| SandboxError::net("add default route", gateway.to_string(), e))
        })
    })();
    if let Err(e) = made {
        let _ = teardown_container_net(&net);
        return Err(e);
    }
    Ok(net)
}

/// Removes the veth and the namespace; missing pieces are fine.
pub(crate) fn teardown_container_net(net: &ContainerNet) -> Result<()> {
    let link = delete_link(&net.host_link);
    let ns = delete_netns(&net.netns);
    link.and(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: 1,000 bridged workers need ~2,000 neighbour entries; the kernel's
    /// defaults (512 soft, 1,024 hard) are short, 64 workers fit.
    #[test]
    fn neighbour_limits_are_sized_for_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gc_thresh2"), "512\n").unwrap();
        std::fs::write(dir.path().join("gc_thresh3"), "1024\n").unwrap();
        assert_eq!(neighbour_shortfall_in(dir.path(), 64), vec![]);
        let short = neighbour_shortfall_in(dir.path(), 1000);
        let wanted: Vec<(&str, u64, u64)> = short
            .iter()
            .map(|l| (l.sysctl, l.current, l.wanted))
            .collect();
        assert_eq!(
            wanted,
            vec![("gc_thresh2", 512, 6000), ("gc_thresh3", 1024, 8000)]
        );
        // Where the files are missing (a non-initial network namespace): nothing to say.
        assert_eq!(
            neighbour_shortfall_in(&dir.path().join("none"), 1000),
            vec![]
        );
    }
}
