//! The containers' firewall: an nftables table per poold instance (`inet poold_<link prefix>`)
//! that keeps containers off the host's own services. Its input chain, for packets from the
//! instance's bridges (one per slice of the subnet, each by its exact name): listed host
//! ports (TCP and UDP) pass; a TCP connection request (SYN without ACK) is dropped; the rest of TCP (the host's health checks, proxy and IPVS connections), ICMP
//! and ICMPv6 (errors, echo, neighbour discovery) pass; everything else (UDP and other
//! protocols, to any host address: the gateway, the host's other addresses, a VIP, the
//! bridge's IPv6 link-local address) is dropped. No conntrack: see [`ruleset`].
//! Forwarded traffic (containers answering remote clients, containers reaching other machines) is
//! not touched. The table is replaced atomically (one `nft` transaction), again with the
//! longer list before each new bridge is made, and removed with the bridges.
//!
//! The rules are built with the `nftables` crate's typed JSON schema and fed to `nft -j`,
//! the reference parser: no rule text is pasted together and no netlink encoding of
//! nftables is hand-rolled.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::error::{Result, SandboxError};

const INPUT_CHAIN: &str = "input";

/// The nft binary: where Debian puts it, else whatever PATH finds.
fn nft_program() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

/// Running `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} -j -f: {status}: {stderr}")]
    Failed {
        program: &'static str,
        status: std::process::ExitStatus,
        /// What nft said.
        stderr: String,
    },
}

/// Feeds `ruleset` to `nft -j` as one transaction. Not the crate's own runner: that one reads
/// `-f -`, which nft opens as /dev/stdin (missing in minimal systems such as the test VM),
/// and drops nft's error message.
fn apply(table: &str, action: &'static str, ruleset: &Nftables) -> Result<()> {
    use std::io::Write;
    let program = nft_program();
    let fail = |source| SandboxError::Firewall {
        table: table.to_string(),
        action,
        source,
    };
    let json = serde_json::to_vec(ruleset).expect("an nftables ruleset serializes");
    let mut child = std::process::Command::new(program)
        .args(["-j", "-f", "/proc/self/fd/0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| fail(NftError::Spawn { program, source }))?;
    let written = child.stdin.take().expect("stdin is piped").write_all(&json);
    let out = child
        .wait_with_output()
        .map_err(|source| fail(NftError::Spawn { program, source }))?;
    if !out.status.success() {
        return Err(fail(NftError::Failed {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }));
    }
    written.map_err(|source| fail(NftError::Spawn { program, source }))
}

fn table(name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_string()),
        ..Table::default()
    })
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// A packet that came in on one of `bridges` (exact names: a wildcard such as `pdbr0*`
/// would also match another instance's `pdbr01`).
fn from_bridge(bridges: &[String]) -> Statement<'static> {
    let name = |b: &String| Expression::String(Cow::Owned(b.clone()));
    let right = match bridges {
        [one] => name(one),
        many => Expression::Named(NamedExpression::Set(
            many.iter().map(|b| SetItem::Element(name(b))).collect(),
        )),
    };
    matches(
        Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::Iifname,
        })),
        Operator::EQ,
        right,
    )
}

fn field(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn rule(table: &str, statements: Vec<Statement<'static>>, comment: &str) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Borrowed(INPUT_CHAIN),
        expr: Cow::Owned(statements),
        comment: Some(Cow::Owned(comment.to_string())),
        ..Rule::default()
    })
}

/// The whole table for `bridges` (every bridge of the instance), replacing an older copy in
/// the same transaction: a bridge made later is covered by installing the table again with
/// it, before the bridge exists.
///
/// Stateless on purpose: a `ct state` match makes the kernel track every connection of the
/// host's network namespace (loopback and the proxy's clients too); under a busy proxy that
/// filled the conntrack table (262,144 entries) within a minute and the kernel dropped new
/// connections to every container. Without a SYN, no TCP connection to the host can open.
pub(crate) fn ruleset(
    table_name: &str,
    bridges: &[String],
    allow_host_ports: &[u16],
) -> Nftables<'static> {
    let mut batch = Batch::new();
    // add + delete + add: the table is replaced whether or not it existed.
    batch.add(table(table_name));
    batch.delete(table(table_name));
    batch.add(table(table_name));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Owned(table_name.to_string()),
        name: Cow::Borrowed(INPUT_CHAIN),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Input),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    if !allow_host_ports.is_empty() {
        let ports: Vec<SetItem<'static>> = allow_host_ports
            .iter()
            .map(|p| SetItem::Element(Expression::Number(u32::from(*p))))
            .collect();
        for protocol in ["tcp", "udp"] {
            batch.add(rule(
                table_name,
                vec![
                    from_bridge(bridges),
                    matches(
                        field(protocol, "dport"),
                        Operator::EQ,
                        Expression::Named(NamedExpression::Set(ports.clone())),
                    ),
                    Statement::Accept(None),
                ],
                "network.allow_host_ports",
            ));
        }
    }
    batch.add(rule(
        table_name,
        vec![
            from_bridge(bridges),
            matches(
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    field("tcp", "flags"),
                    Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                        Expression::String(Cow::Borrowed("syn")),
                        Expression::String(Cow::Borrowed("ack")),
                    ]))),
                ))),
                Operator::EQ,
                Expression::String(Cow::Borrowed("syn")),
            ),
            Statement::Drop(None),
        ],
        "no TCP connection from a worker to the host",
    ));
    // Protocol numbers, not names: nft resolves names through /etc/protocols, which minimal
    // systems (the test VM) lack.
    for (protocol, comment) in [
        (
            6,
            "the rest of TCP: connections the host started (health checks, proxy, IPVS)",
        ),
        (1, "ICMP: errors for the host's connections, echo"),
        (58, "ICMPv6: errors, echo, IPv6 neighbour discovery"),
    ] {
        batch.add(rule(
            table_name,
            vec![
                from_bridge(bridges),
                matches(
                    Expression::Named(NamedExpression::Meta(Meta {
                        key: MetaKey::L4proto,
                    })),
                    Operator::EQ,
                    Expression::Number(protocol),
                ),
                Statement::Accept(None),
            ],
            comment,
        ));
    }
    batch.add(rule(
        table_name,
        vec![from_bridge(bridges), Statement::Drop(None)],
        "workers reach no other host service (UDP, other protocols)",
    ));
    batch.to_nftables()
}

/// Installs (or replaces) the table, covering `bridges`.
pub(crate) fn install(
    table_name: &str,
    bridges: &[String],
    allow_host_ports: &[u16],
) -> Result<()> {
    apply(
        table_name,
        "install",
        &ruleset(table_name, bridges, allow_host_ports),
    )
}

/// Whether the table is there (a failing `nft` counts as "no": reinstalling says why).
pub(crate) fn exists(table_name: &str) -> bool {
    std::process::Command::new(nft_program())
        .args(["list", "table", "inet", table_name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes the table; a missing one is fine.
pub(crate) fn remove(table_name: &str) -> Result<()> {
    let mut batch = Batch::new();
    batch.add(table(table_name));
    batch.delete(table(table_name));
    apply(table_name, "remove", &batch.to_nftables())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_is_what_nft_expects() {
        let json =
            serde_json::to_value(ruleset("poold_pdx", &["pdbr0".into()], &[53, 8125])).unwrap();
        let text = json.to_string();
        for want in [
            r#"{"add":{"table":{"family":"inet","name":"poold_pdx"}}}"#,
            r#"{"delete":{"table":{"family":"inet","name":"poold_pdx"}}}"#,
            r#""hook":"input""#,
            r#"{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"pdbr0"}}"#,
            r#"{"&":[{"payload":{"field":"flags","protocol":"tcp"}},{"|":["syn","ack"]}]}"#,
            r#""right":{"set":[53,8125]}"#,
            r#"{"drop":null}"#,
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }

    #[test]
    fn no_listed_ports_means_no_port_rules() {
        let text = serde_json::to_string(&ruleset("poold_pdx", &["pdbr0".into()], &[])).unwrap();
        assert!(!text.contains("dport"), "{text}");
        assert!(text.contains("ICMPv6"), "{text}");
        assert!(
            text.contains(r#""right":58"#) && !text.contains(r#""right":"tcp""#),
            "protocol numbers, not names (no /etc/protocols needed): {text}"
        );
        assert!(!text.contains("\"ct\""), "stateless: {text}");
    }

    /// Several bridges (one per slice of the subnet): every rule matches each by its exact
    /// name, none by a prefix that could take in another instance's bridges.
    #[test]
    fn every_bridge_of_the_instance_is_covered_by_name() {
        let bridges = ["pdbr0".to_string(), "pdbr0-1".into(), "pdbr0-2".into()];
        let text = serde_json::to_string(&ruleset("poold_pdx", &bridges, &[53])).unwrap();
        let set = r#"{"left":{"meta":{"key":"iifname"}},"right":{"set":["pdbr0","pdbr0-1","pdbr0-2"]},"op":"=="}"#;
        // The two port rules, the SYN drop, three protocol accepts and the final drop.
        assert_eq!(text.matches(set).count(), 7, "{text}");
        assert!(!text.contains('*'), "no wildcard: {text}");
    }
}
