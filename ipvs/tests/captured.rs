//! Bytes captured from the real kernel (Debian 6.1 cloud kernel, in the VM) parse into the
//! table that was built, and every message emits back to the exact bytes it came from.
//!
//! The files in tests/captured/ hold one reply datagram per line, in hex, as the kernel
//! sent them to `tests/capture.rs`, which builds the table below in a fresh namespace. To
//! capture again (see tests/capture.rs for the details):
//!
//! ```text
//! cargo xtask vm-test --filter ipvs_capture -- --nocapture 2>&1 | tee /tmp/capture.log
//! rm ipvs/tests/captured/*.hex
//! grep -o 'CAPTURE .*' /tmp/capture.log | tr -d '\r' | while read -r _ name hex; do
//!     printf '%s\n' "$hex" >> ipvs/tests/captured/"$name".hex; done
//! ```

mod common;

use ipvs::codec::{self, IpvsMessage, Reply};
use ipvs::{AddressFamily, Destination, Service, ServiceFlags, Timeouts};
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage};
use netlink_packet_generic::GenlMessage;

/// The datagrams of one capture file.
fn datagrams(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/captured/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let line = line.trim();
            assert!(
                line.len() % 2 == 0,
                "{path}:{}: odd number of hex digits",
                n + 1
            );
            (0..line.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&line[i..i + 2], 16).unwrap_or_else(|e| {
                        panic!("{path}:{}: column {}: not hex: {e}", n + 1, i + 1)
                    })
                })
                .collect()
        })
        .collect()
}

/// Every reply of a capture file, in order.
fn replies(name: &str) -> Vec<Reply<IpvsMessage>> {
    datagrams(name)
        .iter()
        .flat_map(|d| codec::decode_replies::<IpvsMessage>(d).unwrap())
        .map(|(_, reply)| reply)
        .collect()
}

fn messages(replies: &[Reply<IpvsMessage>]) -> Vec<&IpvsMessage> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn service_of(msg: &IpvsMessage) -> Service {
    let attrs = msg
        .attrs
        .iter()
        .find_map(|a| match a {
            codec::Attr::Service(s) => Some(s),
            _ => None,
        })
        .expect("service attribute");
    codec::service_from_attrs(attrs).unwrap()
}

/// The services tests/capture.rs builds, as the kernel lists them: hashed, and
/// persistent where a timeout was given.
fn expected_services() -> Vec<Service> {
    let mut services = common::captured_services();
    for service in &mut services {
        service.flags |= ServiceFlags::HASHED;
        if service.timeout != 0 {
            service.flags |= ServiceFlags::PERSISTENT;
        }
    }
    services
}

#[test]
fn service_dump_is_the_table_that_was_built() {
    let replies = replies("services_dump");
    assert_eq!(replies.last(), Some(&Reply::Done));
    let mut services: Vec<Service> = messages(&replies).into_iter().map(service_of).collect();
    services.sort_by_key(|s| s.key);
    let mut expected = expected_services();
    expected.sort_by_key(|s| s.key);
    assert_eq!(services, expected);
}

#[test]
fn service_get_is_one_message_then_the_ack() {
    let replies = replies("service_get");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[1], Reply::Ack);
    let Reply::Message(msg) = &replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(service_of(msg), expected_services()[0]);
}

#[test]
fn destination_dump_is_the_destinations_that_were_added() {
    let replies = replies("dests_dump");
    assert_eq!(replies.last(), Some(&Reply::Done));
    let mut dests: Vec<Destination> = messages(&replies)
        .into_iter()
        .flat_map(|m| &m.attrs)
        .filter_map(|a| match a {
            codec::Attr::Dest(d) => Some(codec::destination_from_attrs(d, AddressFamily::Inet)),
            _ => None,
        })
        .collect::<Result<_, _>>()
        .unwrap();
    dests.sort_by_key(|d| d.addr);
    assert_eq!(dests, common::captured_web_destinations());
}

#[test]
fn destination_dump_of_a_missing_service_is_empty_not_an_error() {
    // Why Client::destinations asks for the service when the dump is empty.
    assert_eq!(replies("dests_dump_missing_service"), vec![Reply::Done]);
}

#[test]
fn info_and_config() {
    let replies_info = replies("info");
    let info = codec::info_from_attrs(&messages(&replies_info)[0].attrs).unwrap();
    assert_eq!(info.version_string(), "1.2.1");
    assert_eq!(info.conn_table_size, 4096);
    let replies_config = replies("config");
    let timeouts = codec::timeouts_from_attrs(&messages(&replies_config)[0].attrs).unwrap();
    assert_eq!(
        timeouts,
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
}

#[test]
fn kernel_errors_carry_the_errno() {
    const ENOENT: i32 = 2;
    const ESRCH: i32 = 3;
    assert_eq!(replies("error_missing_service"), vec![Reply::Error(ESRCH)]);
    assert_eq!(replies("error_missing_dest"), vec![Reply::Error(ENOENT)]);
}

#[test]
fn every_captured_message_emits_back_to_the_same_bytes() {
    let mut checked = 0;
    for name in [
        "services_dump",
        "service_get",
        "dests_dump",
        "dests_dump_missing_service",
        "info",
        "config",
        "error_missing_service",
        "error_missing_dest",
    ] {
        for datagram in datagrams(name) {
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let len = NetlinkBuffer::new_checked(rest).unwrap().length() as usize;
                let original = &rest[..len];
                let msg =
                    NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(original).unwrap();
                let mut emitted = vec![0u8; msg.buffer_len()];
                msg.serialize(&mut emitted);
                assert_eq!(emitted, original, "{name}: message {checked} differs");
                checked += 1;
                rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
            }
        }
    }
    assert!(checked >= 14, "only {checked} messages");
}
