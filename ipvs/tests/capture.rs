//! Capture tool for `tests/captured/*.hex`: builds a known IPVS table in a fresh network
//! namespace, sends raw requests and prints each reply datagram the kernel sends as
//! `CAPTURE <name> <hex>` lines. `tests/captured.rs` parses the pasted bytes on any host.
//!
//! Capture (in the VM, Debian's 6.1 cloud kernel):
//!
//! ```text
//! cargo xtask vm-test --filter ipvs_capture -- --nocapture 2>&1 | tee /tmp/capture.log
//! grep -o 'CAPTURE .*' /tmp/capture.log | while read -r _ name hex; do
//!     printf '%s\n' "$hex" >> ipvs/tests/captured/"$name".hex; done
//! ```
//!
//! It runs in every VM run and compares every reply with the stored capture, byte for byte
//! except the sequence numbers and port ids (they differ per socket and request) and the
//! order of a dump's messages (the service hash mixes in the namespace's address), so a
//! kernel that changes its replies fails here even before anyone recaptures. Recapturing
//! prints the new bytes first, then fails until the files are replaced.

mod common;

/// Named `ipvs_capture::*` for `--filter`.
mod ipvs_capture {
    use super::common;

    use ipvs::codec::{self, Attr, Command, IpvsMessage, Reply};
    use ipvs::{Client, ServiceKey};
    use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
    use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

    use super::common::ip;

    /// Bring up `lo` in the calling thread's namespace: the kernel creates the namespace's
    /// local routing table then, and IPVS refuses destinations (EINVAL) while
    /// `inet_addr_type()` has no local table to classify their addresses with.
    fn loopback_up() {
        let ip = ["/usr/bin/ip", "/sbin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("iproute2 ip");
        let status = std::process::Command::new(ip)
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip link set lo up");
        assert!(status.success(), "ip link set lo up failed: {status}");
    }

    /// The table the captured files describe (tests/common, which captured.rs expects).
    fn build_table(ipvs: &mut Client) {
        for service in common::captured_services() {
            ipvs.add_service(&service).unwrap();
        }
        for dest in common::captured_web_destinations() {
            ipvs.add_destination(&common::web_key(), &dest).unwrap();
        }
    }

    /// Send one request on a raw socket and return every datagram up to the end.
    fn raw(socket: &Socket, family: u16, seq: u32, msg: IpvsMessage, dump: bool) -> Vec<Vec<u8>> {
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let bytes = codec::encode_request(msg, family, flags, seq);
        socket.send(&bytes, 0).unwrap();
        let mut datagrams = Vec::new();
        loop {
            let (datagram, _) = socket.recv_from_full().unwrap();
            let replies = codec::decode_replies::<IpvsMessage>(&datagram)
                .unwrap_or_else(|e| panic!("kernel reply does not decode: {e}"));
            datagrams.push(datagram);
            if replies
                .iter()
                .any(|(_, r)| matches!(r, Reply::Ack | Reply::Done | Reply::Error(_)))
            {
                return datagrams;
            }
        }
    }

    /// The stored captures, by request name.
    const STORED: &[(&str, &str)] = &[
        ("services_dump", include_str!("captured/services_dump.hex")),
        ("service_get", include_str!("captured/service_get.hex")),
        ("dests_dump", include_str!("captured/dests_dump.hex")),
        (
            "dests_dump_missing_service",
            include_str!("captured/dests_dump_missing_service.hex"),
        ),
        ("info", include_str!("captured/info.hex")),
        ("config", include_str!("captured/config.hex")),
        (
            "error_missing_service",
            include_str!("captured/error_missing_service.hex"),
        ),
        (
            "error_missing_dest",
            include_str!("captured/error_missing_dest.hex"),
        ),
    ];

    const NLMSG_ERROR: u16 = 2;

    /// The messages of a datagram, each in hex with its sequence number and port id set to
    /// zero, also in the request header an error or ack message quotes.
    fn masked_messages(datagram: &[u8]) -> Vec<String> {
        let mut messages = Vec::new();
        let mut at = 0;
        while at + 16 <= datagram.len() {
            let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(datagram[at + 4..at + 6].try_into().unwrap());
            let end = (at + len.max(16)).min(datagram.len());
            let mut message = datagram[at..end].to_vec();
            message[8..16].fill(0);
            // struct nlmsgerr: int error, then the request's nlmsghdr.
            if kind == NLMSG_ERROR && message.len() >= 20 + 16 {
                message[20 + 8..20 + 16].fill(0);
            }
            messages.push(message.iter().map(|b| format!("{b:02x}")).collect());
            at += (len.max(16) + 3) & !3;
        }
        messages
    }

    /// Every message of `datagrams`, masked and sorted: a dump lists services in the order of
    /// the kernel's hash table, which mixes in the namespace's address, so it differs per
    /// namespace (and so may the datagram boundaries).
    fn comparable(datagrams: &[Vec<u8>]) -> Vec<String> {
        let mut messages: Vec<String> = datagrams.iter().flat_map(|d| masked_messages(d)).collect();
        messages.sort();
        messages
    }

    fn stored_hex(name: &str) -> Vec<&'static str> {
        let (_, text) = STORED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no stored capture {name}"));
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn comparison_ignores_sequence_numbers_port_ids_and_dump_order_only() {
        let stored = vec![unhex(stored_hex("error_missing_service")[0])];
        let mut other = stored.clone();
        other[0][8..16].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // seq, pid
        other[0][28..36].copy_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]); // the quoted request's
        assert_eq!(comparable(&other), comparable(&stored));
        other[0][16] ^= 1; // the errno
        assert_ne!(comparable(&other), comparable(&stored));
        // A dump's messages in another order, in other datagrams, compare equal.
        let dump: Vec<Vec<u8>> = stored_hex("services_dump").into_iter().map(unhex).collect();
        let messages: Vec<Vec<u8>> = dump
            .iter()
            .flat_map(|d| masked_messages(d))
            .map(|hex| unhex(&hex))
            .rev()
            .collect();
        assert!(messages.len() > 2, "a dump of several services");
        assert_eq!(comparable(&messages), comparable(&dump));
    }

    #[test]
    #[ignore = "vm: needs IPVS (capture tool)"]
    fn kernel_replies_match_the_stored_captures() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            loopback_up();
            let mut ipvs = Client::new().unwrap();
            build_table(&mut ipvs);
            let mut socket = Socket::new(NETLINK_GENERIC).unwrap();
            socket.bind_auto().unwrap();
            socket.connect(&SocketAddr::new(0, 0)).unwrap();
            let family = ipvs.family_id();
            let web = Attr::Service(codec::service_key_attrs(&ServiceKey::tcp(
                ip("10.0.0.1"),
                80,
            )));
            let missing = Attr::Service(codec::service_key_attrs(&ServiceKey::tcp(
                ip("10.9.9.9"),
                9,
            )));
            let dest_key = |addr| Attr::Dest(codec::destination_key_attrs(&ip(addr), 80));
            let requests: Vec<(&str, IpvsMessage, bool)> = vec![
                (
                    "services_dump",
                    IpvsMessage::new(Command::GetService, vec![]),
                    true,
                ),
                (
                    "service_get",
                    IpvsMessage::new(Command::GetService, vec![web.clone()]),
                    false,
                ),
                (
                    "dests_dump",
                    IpvsMessage::new(Command::GetDest, vec![web.clone()]),
                    true,
                ),
                (
                    "dests_dump_missing_service",
                    IpvsMessage::new(Command::GetDest, vec![missing.clone()]),
                    true,
                ),
                ("info", IpvsMessage::new(Command::GetInfo, vec![]), false),
                (
                    "config",
                    IpvsMessage::new(Command::GetConfig, vec![]),
                    false,
                ),
                (
                    "error_missing_service",
                    IpvsMessage::new(Command::GetService, vec![missing]),
                    false,
                ),
                (
                    "error_missing_dest",
                    IpvsMessage::new(Command::DelDest, vec![web, dest_key("10.0.1.99")]),
                    false,
                ),
            ];
            let mut differences = Vec::new();
            for (seq, (name, msg, dump)) in requests.into_iter().enumerate() {
                let datagrams = raw(&socket, family, 100 + seq as u32, msg, dump);
                for datagram in &datagrams {
                    let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
                    println!("CAPTURE {name} {hex}");
                }
                let got = comparable(&datagrams);
                let stored: Vec<Vec<u8>> = stored_hex(name).into_iter().map(unhex).collect();
                let want = comparable(&stored);
                if got != want {
                    differences.push(format!(
                        "{name} (seq and port ids masked):\n  stored: {want:?}\n  kernel: {got:?}"
                    ));
                }
            }
            ipvs.flush().unwrap();
            assert!(
                differences.is_empty(),
                "the kernel's replies differ from tests/captured/:\n{}",
                differences.join("\n")
            );
        })
        .join()
        .unwrap();
    }
}
