//! The blocking IPVS client: one generic netlink socket, requests built and replies read
//! by [`crate::codec`].

#![warn(missing_docs)]

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use crate::codec::{self, Attr, Command, IpvsMessage, Reply};
use crate::error::{AttrError, Error, Result};
use crate::model::{DaemonState, Destination, Info, Service, ServiceKey, SyncDaemon, Timeouts};

// Linux errno values the kernel's IPVS code returns (asm-generic/errno-base.h).
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EACCES: i32 = 13;
const EEXIST: i32 = 17;

/// The fixed id of the generic netlink controller (linux/genetlink.h).
const GENL_ID_CTRL: u16 = 0x10;

/// What a request was about, so a kernel errno can become a typed [`Error`].
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    None,
    Service(&'a ServiceKey),
    NewService(&'a Service),
    Destination(&'a ServiceKey, IpAddr, u16),
    Daemon(DaemonState),
}

/// Turn a kernel errno into the error for `cmd` on `target`. IPVS reuses ENOENT for an
/// unknown scheduler (service commands) and a missing destination (destination commands),
/// so the command decides.
fn kernel_error(cmd: Command, errno: i32, target: Target<'_>) -> Error {
    let op = cmd.name();
    match (errno, target) {
        (EPERM | EACCES, _) => Error::PermissionDenied { op },
        (ESRCH, Target::Service(key)) | (ESRCH, Target::Destination(key, ..)) => {
            Error::ServiceNotFound { op, service: *key }
        }
        (ESRCH, Target::NewService(svc)) => Error::ServiceNotFound {
            op,
            service: svc.key,
        },
        (ENOENT, Target::NewService(svc)) => Error::UnknownScheduler {
            op,
            name: svc.scheduler.clone(),
        },
        (ENOENT, Target::Destination(key, addr, port)) => Error::DestinationNotFound {
            op,
            service: *key,
            addr,
            port,
        },
        (EEXIST, Target::NewService(svc)) => Error::AlreadyExists {
            op,
            what: format!("service {}", svc.key),
        },
        (EEXIST, Target::Destination(key, addr, port)) => Error::AlreadyExists {
            op,
            what: format!(
                "destination {} in service {key}",
                std::net::SocketAddr::new(addr, port)
            ),
        },
        (EEXIST, Target::Daemon(state)) => Error::AlreadyExists {
            op,
            what: format!("{} sync daemon", state.name()),
        },
        (errno, _) => Error::Kernel { op, errno },
    }
}

/// A blocking IPVS client over one generic netlink socket.
///
/// The socket acts on the network namespace of the thread that created it, for its whole
/// life: create the client after entering the namespace (IPVS tables are per namespace).
/// Every command needs CAP_NET_ADMIN, listings included.
#[derive(Debug)]
pub struct Client {
    socket: Socket,
    family_id: u16,
    seq: u32,
}

impl Client {
    /// Open a socket, resolve the IPVS family and check access with `GET_INFO`.
    ///
    /// [`Error::NotAvailable`] when the kernel has no IPVS (module not loaded),
    /// [`Error::PermissionDenied`] without CAP_NET_ADMIN.
    pub fn new() -> Result<Client> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|source| Error::Io {
            op: "open generic netlink socket".into(),
            source,
        })?;
        socket.bind_auto().map_err(|source| Error::Io {
            op: "bind generic netlink socket".into(),
            source,
        })?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|source| Error::Io {
                op: "connect generic netlink socket".into(),
                source,
            })?;
        let mut client = Client {
            socket,
            family_id: 0,
            seq: 0,
        };
        client.family_id = client.resolve_family()?;
        client.info()?;
        Ok(client)
    }

    /// The generic netlink family id the kernel assigned to IPVS.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn resolve_family(&mut self) -> Result<u16> {
        const OP: &str = "CTRL_CMD_GETFAMILY IPVS";
        let request = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(codec::FAMILY_NAME.to_owned())],
        };
        let seq = self.next_seq();
        let bytes = codec::encode_request(request, GENL_ID_CTRL, NLM_F_ACK, seq);
        self.send(&bytes, OP)?;
        let mut family_id = None;
        loop {
            for (reply_seq, reply) in self.recv::<GenlCtrl>(OP)? {
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Message(msg) => {
                        for nla in msg.nlas {
                            if let GenlCtrlAttrs::FamilyId(id) = nla {
                                family_id = Some(id);
                            }
                        }
                    }
                    Reply::Ack | Reply::Done => {
                        return family_id.ok_or_else(|| Error::Decode {
                            op: OP,
                            reason: "reply without CTRL_ATTR_FAMILY_ID".into(),
                        })
                    }
                    Reply::Error(ENOENT) => return Err(Error::NotAvailable),
                    Reply::Error(EPERM | EACCES) => return Err(Error::PermissionDenied { op: OP }),
                    Reply::Error(errno) => return Err(Error::Kernel { op: OP, errno }),
                    Reply::Skip => {}
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8], op: &str) -> Result<()> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                // A signal handler ran; nothing was sent.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: format!("send {op}"),
                        source,
                    })
                }
            }
        }
    }

    fn recv<F>(&self, op: &'static str) -> Result<Vec<(u32, Reply<F>)>>
    where
        F: netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
            + std::fmt::Debug,
    {
        let datagram = loop {
            match self.socket.recv_from_full() {
                Ok((datagram, _)) => break datagram,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: format!("receive {op} reply"),
                        source,
                    })
                }
            }
        };
        codec::decode_replies::<F>(&datagram).map_err(|e| Error::Decode {
            op,
            reason: e.to_string(),
        })
    }

    /// Send one IPVS command and collect the reply messages. A dump reads until
    /// `NLMSG_DONE`; anything else until the ACK.
    fn execute(
        &mut self,
        cmd: Command,
        attrs: Vec<Attr>,
        dump: bool,
        target: Target<'_>,
    ) -> Result<Vec<IpvsMessage>> {
        let op = cmd.name();
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let seq = self.next_seq();
        let bytes = codec::encode_request(IpvsMessage::new(cmd, attrs), self.family_id, flags, seq);
        tracing::debug!(
            ipvs.op = op,
            ipvs.seq = seq,
            ipvs.dump = dump,
            "ipvs request"
        );
        self.send(&bytes, op)?;
        let mut messages = Vec::new();
        loop {
            for (reply_seq, reply) in self.recv::<IpvsMessage>(op)? {
                // Replies to earlier requests (never the case with this blocking client,
                // but cheap to guard) are dropped.
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Message(msg) => messages.push(msg),
                    Reply::Ack | Reply::Done => return Ok(messages),
                    Reply::Error(errno) => return Err(kernel_error(cmd, errno, target)),
                    Reply::Skip => {}
                }
            }
        }
    }

    /// Every service, with its counters.
    pub fn services(&mut self) -> Result<Vec<Service>> {
        let cmd = Command::GetService;
        self.execute(cmd, vec![], true, Target::None)?
            .into_iter()
            .map(|msg| service_of(cmd, &msg))
            .collect()
    }

    /// One service; [`Error::ServiceNotFound`] if absent.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Service> {
        let cmd = Command::GetService;
        let attrs = vec![Attr::Service(codec::service_key_attrs(key))];
        let replies = self.execute(cmd, attrs, false, Target::Service(key))?;
        match replies.first() {
            Some(msg) => service_of(cmd, msg),
            None => Err(Error::ServiceNotFound {
                op: cmd.name(),
                service: *key,
            }),
        }
    }

    /// Add a service (`ipvsadm -A`). [`Error::AlreadyExists`] if it exists,
    /// [`Error::UnknownScheduler`] if the kernel has no such scheduler (or, with a
    /// `pe_name`, no such persistence engine: the kernel answers both with ENOENT).
    pub fn add_service(&mut self, service: &Service) -> Result<()> {
        self.send_service(Command::NewService, service)
    }

    /// Change a service's scheduler, flags, persistence (`ipvsadm -E`); the service is
    /// found by `service.key`. [`Error::ServiceNotFound`], [`Error::UnknownScheduler`].
    pub fn edit_service(&mut self, service: &Service) -> Result<()> {
        self.send_service(Command::SetService, service)
    }

    /// NEW_SERVICE or SET_SERVICE with every field of `service`.
    fn send_service(&mut self, cmd: Command, service: &Service) -> Result<()> {
        let attrs = vec![Attr::Service(codec::service_attrs(service))];
        self.execute(cmd, attrs, false, Target::NewService(service))?;
        Ok(())
    }

    /// Delete a service and its destinations (`ipvsadm -D`). [`Error::ServiceNotFound`].
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        let attrs = vec![Attr::Service(codec::service_key_attrs(key))];
        self.execute(Command::DelService, attrs, false, Target::Service(key))?;
        Ok(())
    }

    /// The destinations of a service. The kernel answers an empty dump for a missing
    /// service; this method then asks for the service, so a missing service is
    /// [`Error::ServiceNotFound`] and never an empty list.
    pub fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<Destination>> {
        let cmd = Command::GetDest;
        let attrs = vec![Attr::Service(codec::service_key_attrs(service))];
        let replies = self.execute(cmd, attrs, true, Target::Service(service))?;
        if replies.is_empty() {
            self.service(service)?;
        }
        let family = service.family();
        let mut dests = Vec::with_capacity(replies.len());
        for msg in &replies {
            for attr in &msg.attrs {
                if let Attr::Dest(dest_attrs) = attr {
                    let dest = codec::destination_from_attrs(dest_attrs, family)
                        .map_err(attributes_error(cmd))?;
                    dests.push(dest);
                }
            }
        }
        Ok(dests)
    }

    /// Add a destination (`ipvsadm -a`). [`Error::ServiceNotFound`],
    /// [`Error::AlreadyExists`].
    pub fn add_destination(&mut self, service: &ServiceKey, dest: &Destination) -> Result<()> {
        self.dest_command(Command::NewDest, service, dest)
    }

    /// Change a destination's weight, thresholds, forwarding (`ipvsadm -e`).
    /// [`Error::ServiceNotFound`], [`Error::DestinationNotFound`].
    pub fn edit_destination(&mut self, service: &ServiceKey, dest: &Destination) -> Result<()> {
        self.dest_command(Command::SetDest, service, dest)
    }

    fn dest_command(
        &mut self,
        cmd: Command,
        service: &ServiceKey,
        dest: &Destination,
    ) -> Result<()> {
        let attrs = vec![
            Attr::Service(codec::service_key_attrs(service)),
            Attr::Dest(codec::destination_attrs(dest)),
        ];
        let target = Target::Destination(service, dest.addr, dest.port);
        self.execute(cmd, attrs, false, target)?;
        Ok(())
    }

    /// Change only the weight of a destination (0 drains it: no new connections). The
    /// kernel needs the whole destination with SET_DEST, so this reads it first; a
    /// concurrent edit of its other fields between the two calls would be overwritten.
    /// [`Error::ServiceNotFound`], [`Error::DestinationNotFound`].
    pub fn set_weight(
        &mut self,
        service: &ServiceKey,
        addr: IpAddr,
        port: u16,
        weight: i32,
    ) -> Result<()> {
        let mut dest = self
            .destinations(service)?
            .into_iter()
            .find(|d| d.addr == addr && d.port == port)
            .ok_or(Error::DestinationNotFound {
                op: Command::GetDest.name(),
                service: *service,
                addr,
                port,
            })?;
        dest.weight = weight;
        self.edit_destination(service, &dest)
    }

    /// Delete a destination (`ipvsadm -d`). [`Error::ServiceNotFound`],
    /// [`Error::DestinationNotFound`].
    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<()> {
        let attrs = vec![
            Attr::Service(codec::service_key_attrs(service)),
            Attr::Dest(codec::destination_key_attrs(&addr, port)),
        ];
        let target = Target::Destination(service, addr, port);
        self.execute(Command::DelDest, attrs, false, target)?;
        Ok(())
    }

    /// Version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        self.get_global(Command::GetInfo, codec::info_from_attrs)
    }

    /// Connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        self.get_global(Command::GetConfig, codec::timeouts_from_attrs)
    }

    /// A command without arguments whose one reply message is read by `read`.
    fn get_global<T>(
        &mut self,
        cmd: Command,
        read: fn(&[Attr]) -> Result<T, AttrError>,
    ) -> Result<T> {
        let replies = self.execute(cmd, vec![], false, Target::None)?;
        let msg = replies.first().ok_or_else(|| no_reply(cmd))?;
        read(&msg.attrs).map_err(attributes_error(cmd))
    }

    /// Set connection timeouts (`ipvsadm --set`); a 0 field is left unchanged.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<()> {
        let attrs = codec::timeouts_attrs(timeouts);
        self.execute(Command::SetConfig, attrs, false, Target::None)?;
        Ok(())
    }

    /// Zero the counters of one service, or of all with `None` (`ipvsadm -Z`).
    pub fn zero(&mut self, service: Option<&ServiceKey>) -> Result<()> {
        match service {
            Some(key) => {
                let attrs = vec![Attr::Service(codec::service_key_attrs(key))];
                self.execute(Command::Zero, attrs, false, Target::Service(key))?;
            }
            None => {
                self.execute(Command::Zero, vec![], false, Target::None)?;
            }
        }
        Ok(())
    }

    /// The running connection sync daemons (`ipvsadm -L --daemon`).
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        let cmd = Command::GetDaemon;
        let mut daemons = Vec::new();
        for msg in self.execute(cmd, vec![], true, Target::None)? {
            for attr in &msg.attrs {
                if let Attr::Daemon(attrs) = attr {
                    daemons.push(codec::daemon_from_attrs(attrs).map_err(attributes_error(cmd))?);
                }
            }
        }
        Ok(daemons)
    }

    /// Start a connection sync daemon (`ipvsadm --start-daemon`).
    /// [`Error::AlreadyExists`] if one of that state runs.
    pub fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<()> {
        let attrs = vec![Attr::Daemon(codec::daemon_attrs(daemon))];
        self.execute(
            Command::NewDaemon,
            attrs,
            false,
            Target::Daemon(daemon.state),
        )?;
        Ok(())
    }

    /// Stop the sync daemon of that state (`ipvsadm --stop-daemon`).
    pub fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        let attrs = vec![Attr::Daemon(vec![codec::DaemonAttr::State(state.number())])];
        self.execute(Command::DelDaemon, attrs, false, Target::Daemon(state))?;
        Ok(())
    }

    /// Delete every service (`ipvsadm -C`).
    pub fn flush(&mut self) -> Result<()> {
        self.execute(Command::Flush, vec![], false, Target::None)?;
        Ok(())
    }
}

fn service_of(cmd: Command, msg: &IpvsMessage) -> Result<Service> {
    let attrs = msg
        .attrs
        .iter()
        .find_map(|attr| match attr {
            Attr::Service(attrs) => Some(attrs),
            _ => None,
        })
        .ok_or_else(|| Error::Decode {
            op: cmd.name(),
            reason: "reply without IPVS_CMD_ATTR_SERVICE".into(),
        })?;
    codec::service_from_attrs(attrs).map_err(attributes_error(cmd))
}

/// The error for a reply whose attributes do not read as the object asked for.
fn attributes_error(cmd: Command) -> impl FnOnce(AttrError) -> Error {
    move |source| Error::Attributes {
        op: cmd.name(),
        source,
    }
}

fn no_reply(cmd: Command) -> Error {
    Error::Decode {
        op: cmd.name(),
        reason: "the kernel acknowledged without a reply message".into(),
    }
}

#[cfg(test)]
mod tests;
