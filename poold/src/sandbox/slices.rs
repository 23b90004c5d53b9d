//! The worker subnet cut into slices, one bridge each, and the address allocator over them.
//!
//! A Linux bridge takes at most 1,023 ports (BR_MAX_PORTS), so one bridge cannot carry a pool
//! of 1,024 workers. The subnet is cut into fixed slices (a /22 by default, or the whole
//! subnet when it is smaller); slice `i` has its own bridge (slice 0 the configured name,
//! slice `i > 0` `<name>-<i>`), its first host address is the gateway on that bridge, and a
//! /22 holds 1,021 worker addresses: fewer than a bridge's ports. The allocator fills the
//! lowest slice first, so a pool that fits in one slice never touches a second bridge.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::error::{Result, SandboxError};

/// The slice prefix unless a test asks for tiny slices: 1,021 worker addresses per bridge.
pub const DEFAULT_SLICE_PREFIX: u8 = 22;

/// The longest link name the kernel takes (IFNAMSIZ 16 with the terminating NUL).
pub const MAX_LINK_NAME: usize = 15;

/// How a subnet is cut into slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slices {
    subnet: Ipv4Net,
    prefix: u8,
}

impl Slices {
    /// `subnet` in slices of `/slice_prefix`, or one slice when the subnet is smaller.
    pub fn new(subnet: Ipv4Net, slice_prefix: u8) -> Self {
        let subnet = subnet.trunc();
        Slices {
            subnet,
            prefix: slice_prefix.max(subnet.prefix_len()).min(32),
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// How many slices the subnet has.
    pub fn count(&self) -> u64 {
        1u64 << (self.prefix - self.subnet.prefix_len())
    }

    /// Slice `index` (below [`Slices::count`]).
    pub fn slice(&self, index: u32) -> Ipv4Net {
        let size = 1u64 << (32 - self.prefix);
        let base = u64::from(u32::from(self.subnet.network())) + u64::from(index) * size;
        Ipv4Net::new(Ipv4Addr::from(base as u32), self.prefix).expect("a prefix of at most 32")
    }

    /// The slice `addr` is in, if it is in the subnet.
    pub fn index_of(&self, addr: Ipv4Addr) -> Option<u32> {
        self.subnet.contains(&addr).then(|| {
            ((u32::from(addr) - u32::from(self.subnet.network())) as u64 >> (32 - self.prefix))
                as u32
        })
    }

    /// The gateway of slice `index`: its first host address, on the slice's bridge.
    pub fn gateway(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.slice(index).network()) + 1)
    }

    /// Worker addresses of one slice: all but its network, gateway and broadcast addresses.
    pub fn worker_addresses_per_slice(&self) -> u64 {
        (1u64 << (32 - self.prefix)).saturating_sub(3)
    }

    /// Worker addresses of the whole subnet.
    pub fn worker_addresses(&self) -> u64 {
        self.count() * self.worker_addresses_per_slice()
    }
}

/// The bridge of slice `index`: slice 0 keeps the configured name (a pool that fits in one
/// slice runs as before), slice `i` is `<bridge>-<i>`.
pub fn bridge_name(bridge: &str, index: u32) -> String {
    if index == 0 {
        bridge.to_string()
    } else {
        format!("{bridge}-{index}")
    }
}

/// The slice whose bridge is called `name`, if `name` is one of `bridge`'s slice names.
pub fn slice_of_bridge(bridge: &str, name: &str) -> Option<u32> {
    if name == bridge {
        return Some(0);
    }
    let digits = name.strip_prefix(bridge)?.strip_prefix('-')?;
    // Only the form bridge_name makes: no sign, no leading zero.
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that the bridge of every slice of `slices` has a valid link name.
pub fn check_bridge_names(bridge: &str, slices: &Slices) -> Result<()> {
    let last = bridge_name(bridge, (slices.count() - 1) as u32);
    if last.len() > MAX_LINK_NAME {
        return Err(SandboxError::SliceBridgeName {
            bridge: bridge.to_string(),
            subnet: slices.subnet(),
            slices: slices.count(),
            last,
        });
    }
    Ok(())
}

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

/// Addresses of one slice that were handed out so far.
#[derive(Debug)]
struct SliceAddresses {
    /// Offset in the slice of the next never-used address (0 is the network, 1 the gateway).
    next_fresh: u32,
    /// Released addresses of the slice, oldest first.
    released: VecDeque<(Ipv4Addr, Instant)>,
}

/// Hands out container addresses from the subnet's slices. Within the lowest slice that has
/// one available: a never-used address first, else the longest-released one whose
/// quarantine is over; a released address is reused only after `quarantine`, because IPVS
/// revives a deleted destination's old connection entries when the same address:port comes
/// back soon (DESIGN 4).
#[derive(Debug)]
pub struct AddressAllocator {
    slices: Slices,
    quarantine: Duration,
    clock: Arc<dyn Clock>,
    in_use: HashSet<Ipv4Addr>,
    /// Slices touched so far, lowest first (a slice past the end has every address fresh).
    touched: Vec<SliceAddresses>,
}

impl AddressAllocator {
    pub fn new(slices: Slices, quarantine: Duration, clock: Arc<dyn Clock>) -> Self {
        AddressAllocator {
            slices,
            quarantine,
            clock,
            in_use: HashSet::new(),
            touched: Vec::new(),
        }
    }

    pub fn slices(&self) -> &Slices {
        &self.slices
    }

    fn slice_mut(&mut self, index: u32) -> &mut SliceAddresses {
        touched_slice(&mut self.touched, index)
    }

    /// Takes an address from the lowest slice that has one: a never-used one if any, else the
    /// longest-released one whose quarantine is over.
    pub fn allocate(&mut self) -> Result<Ipv4Addr> {
        let now = self.clock.now();
        // The offset of a slice's broadcast address: fresh offsets run below it.
        let broadcast = ((1u64 << (32 - self.slices.prefix)) - 1) as u32;
        for index in 0..self.slices.count() as u32 {
            let base = u32::from(self.slices.slice(index).network());
            let slice = touched_slice(&mut self.touched, index);
            while slice.next_fresh < broadcast {
                let addr = Ipv4Addr::from(base + slice.next_fresh);
                slice.next_fresh += 1;
                if !self.in_use.contains(&addr) && !slice.released.iter().any(|(a, _)| *a == addr) {
                    self.in_use.insert(addr);
                    return Ok(addr);
                }
            }
            if let Some(&(addr, at)) = slice.released.front() {
                if now.duration_since(at) >= self.quarantine {
                    slice.released.pop_front();
                    self.in_use.insert(addr);
                    return Ok(addr);
                }
            }
        }
        Err(SandboxError::AddressesExhausted {
            subnet: self.slices.subnet().to_string(),
            quarantined: self.touched.iter().map(|s| s.released.len()).sum(),
        })
    }

    /// Marks `addr` as in use (e.g. a live container adopted after a restart).
    pub fn reserve(&mut self, addr: Ipv4Addr) {
        if let Some(index) = self.slices.index_of(addr) {
            self.slice_mut(index).released.retain(|(a, _)| *a != addr);
        }
        self.in_use.insert(addr);
    }

    /// The quarantined addresses, each with the rest of its quarantine.
    pub fn quarantined(&self) -> Vec<(Ipv4Addr, Duration)> {
        let now = self.clock.now();
        self.touched
            .iter()
            .flat_map(|s| s.released.iter())
            .map(|(a, at)| (*a, self.quarantine.saturating_sub(now.duration_since(*at))))
            .filter(|(_, left)| !left.is_zero())
            .collect()
    }

    /// Quarantines `addr` (not in use) for `left` more (at most the quarantine), as if
    /// released earlier: what a restart restores.
    pub fn quarantine_for(&mut self, addr: Ipv4Addr, left: Duration) {
        let Some(index) = self.slices.index_of(addr) else {
            return;
        };
        if self.in_use.contains(&addr) {
            return;
        }
        let now = self.clock.now();
        let served = self.quarantine.saturating_sub(left);
        let at = now.checked_sub(served).unwrap_or(now);
        let released = &mut self.slice_mut(index).released;
        released.retain(|(a, _)| *a != addr);
        // Oldest first, as allocate() expects.
        let position = released.partition_point(|(_, t)| *t <= at);
        released.insert(position, (addr, at));
    }

    /// Returns `addr`; it is quarantined before it can be handed out again.
    pub fn release(&mut self, addr: Ipv4Addr) {
        if self.in_use.remove(&addr) {
            let now = self.clock.now();
            if let Some(index) = self.slices.index_of(addr) {
                self.slice_mut(index).released.push_back((addr, now));
            }
        }
    }
}

/// Slice `index`'s entry, made (every address fresh) with those below it when first asked for.
fn touched_slice(touched: &mut Vec<SliceAddresses>, index: u32) -> &mut SliceAddresses {
    let index = index as usize;
    while touched.len() <= index {
        touched.push(SliceAddresses {
            next_fresh: 2,
            released: VecDeque::new(),
        });
    }
    &mut touched[index]
}

#[cfg(test)]
mod tests;
