//! The blocking IPVS client.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::model::{Destination, Info, Service, ServiceKey, Timeouts};

/// A blocking IPVS client over one generic netlink socket. The socket acts on the network
/// namespace of the thread that created it, for its whole life.
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Open a socket and resolve the IPVS family. [`Error::NotAvailable`] without ip_vs,
    /// [`Error::PermissionDenied`] without CAP_NET_ADMIN.
    pub fn new() -> Result<Client> {
        Err(Error::NotAvailable)
    }

    /// Every service, with its counters.
    pub fn services(&mut self) -> Result<Vec<Service>> {
        unimplemented!()
    }

    /// One service; [`Error::ServiceNotFound`] if absent.
    pub fn service(&mut self, _key: &ServiceKey) -> Result<Service> {
        unimplemented!()
    }

    /// Add a service (`ipvsadm -A`); [`Error::AlreadyExists`], [`Error::UnknownScheduler`].
    pub fn add_service(&mut self, _service: &Service) -> Result<()> {
        unimplemented!()
    }

    /// Change a service's scheduler, flags, persistence (`ipvsadm -E`).
    pub fn edit_service(&mut self, _service: &Service) -> Result<()> {
        unimplemented!()
    }

    /// Delete a service and its destinations (`ipvsadm -D`).
    pub fn delete_service(&mut self, _key: &ServiceKey) -> Result<()> {
        unimplemented!()
    }

    /// The destinations of a service; [`Error::ServiceNotFound`] if the service is absent
    /// (the kernel answers an empty dump; this method tells the two apart).
    pub fn destinations(&mut self, _service: &ServiceKey) -> Result<Vec<Destination>> {
        unimplemented!()
    }

    /// Add a destination (`ipvsadm -a`).
    pub fn add_destination(&mut self, _service: &ServiceKey, _dest: &Destination) -> Result<()> {
        unimplemented!()
    }

    /// Change a destination's weight, thresholds, forwarding (`ipvsadm -e`).
    pub fn edit_destination(&mut self, _service: &ServiceKey, _dest: &Destination) -> Result<()> {
        unimplemented!()
    }

    /// Delete a destination (`ipvsadm -d`).
    pub fn delete_destination(
        &mut self,
        _service: &ServiceKey,
        _addr: IpAddr,
        _port: u16,
    ) -> Result<()> {
        unimplemented!()
    }

    /// Version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        unimplemented!()
    }

    /// Connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        unimplemented!()
    }

    /// Set connection timeouts (`ipvsadm --set`); a 0 field is left unchanged.
    pub fn set_timeouts(&mut self, _timeouts: &Timeouts) -> Result<()> {
        unimplemented!()
    }

    /// Zero the counters of one service, or of all with `None` (`ipvsadm -Z`).
    pub fn zero(&mut self, _service: Option<&ServiceKey>) -> Result<()> {
        unimplemented!()
    }

    /// Delete every service (`ipvsadm -C`).
    pub fn flush(&mut self) -> Result<()> {
        unimplemented!()
    }
}
