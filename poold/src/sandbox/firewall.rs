//! The workers' firewall: an nftables table per poold instance (`inet poold_<link prefix>`)
//! that keeps workers off the host's own services. Its input chain lets packets from the
//! bridge in only when they belong to a connection the host started (replies to health
//! checks, the proxy and IPVS), go to a listed host port, or are IPv6 neighbour discovery;
//! every other packet from a worker to any host address (the gateway, the host's other
//! addresses, a VIP, the bridge's IPv6 link-local address) is dropped.
//! Forwarded traffic (workers answering remote clients, workers reaching other machines) is
//! not touched. The table is replaced atomically (one `nft` transaction) and made and removed
//! with the bridge.
//!
//! The rules are built with the `nftables` crate's typed JSON schema and fed to `nft -j`,
//! the reference parser: no rule text is pasted together and no netlink encoding of
//! nftables is hand-rolled.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
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

fn from_bridge(bridge: &str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::Iifname,
        })),
        Operator::EQ,
        Expression::String(Cow::Owned(bridge.to_string())),
    )
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

/// The whole table for `bridge`, replacing an older copy in the same transaction.
pub(crate) fn ruleset(
    table_name: &str,
    bridge: &str,
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
    batch.add(rule(
        table_name,
        vec![
            from_bridge(bridge),
            matches(
                Expression::Named(NamedExpression::CT(nftables::expr::CT {
                    key: Cow::Borrowed("state"),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                Expression::List(vec![
                    Expression::String(Cow::Borrowed("established")),
                    Expression::String(Cow::Borrowed("related")),
                ]),
            ),
            Statement::Accept(None),
        ],
        "replies to connections the host started (health checks, proxy, IPVS)",
    ));
    batch.add(rule(
        table_name,
        vec![
            from_bridge(bridge),
            matches(
                Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                    PayloadField {
                        protocol: Cow::Borrowed("icmpv6"),
                        field: Cow::Borrowed("type"),
                    },
                ))),
                Operator::EQ,
                Expression::Named(NamedExpression::Set(vec![
                    SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-solicit"))),
                    SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-advert"))),
                ])),
            ),
            Statement::Accept(None),
        ],
        "IPv6 neighbour discovery (what ARP is for IPv4, which this table does not see)",
    ));
    if !allow_host_ports.is_empty() {
        let ports: Vec<SetItem<'static>> = allow_host_ports
            .iter()
            .map(|p| SetItem::Element(Expression::Number(u32::from(*p))))
            .collect();
        for protocol in ["tcp", "udp"] {
            batch.add(rule(
                table_name,
                vec![
                    from_bridge(bridge),
                    matches(
                        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                            PayloadField {
                                protocol: Cow::Borrowed(protocol),
                                field: Cow::Borrowed("dport"),
                            },
                        ))),
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
        vec![from_bridge(bridge), Statement::Drop(None)],
        "workers reach no other host service",
    ));
    batch.to_nftables()
}

/// Installs (or replaces) the table.
pub(crate) fn install(table_name: &str, bridge: &str, allow_host_ports: &[u16]) -> Result<()> {
    apply(
        table_name,
        "install",
        &ruleset(table_name, bridge, allow_host_ports),
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
        let json = serde_json::to_value(ruleset("poold_pdx", "pdbr0", &[53, 8125])).unwrap();
        let text = json.to_string();
        for want in [
            r#"{"add":{"table":{"family":"inet","name":"poold_pdx"}}}"#,
            r#"{"delete":{"table":{"family":"inet","name":"poold_pdx"}}}"#,
            r#""hook":"input""#,
            r#"{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"pdbr0"}}"#,
            r#""right":["established","related"]"#,
            r#""right":{"set":[53,8125]}"#,
            r#""right":{"set":["nd-neighbor-solicit","nd-neighbor-advert"]}"#,
            r#"{"drop":null}"#,
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }

    #[test]
    fn no_listed_ports_means_no_port_rules() {
        let text = serde_json::to_string(&ruleset("poold_pdx", "pdbr0", &[])).unwrap();
        assert!(!text.contains("dport"), "{text}");
        assert!(text.contains("icmpv6"), "{text}");
    }
}
