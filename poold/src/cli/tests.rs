//! The command lines against the files the README points at.

use super::*;
use std::path::Path;

/// The README runs `poolctl status` with no --socket: the quick start must use its default.
#[test]
fn quickstart_socket_is_poolctls_default() {
    let quickstart = include_str!("../../../config/quickstart.toml");
    let config =
        Config::parse(quickstart, Path::new("quickstart.toml")).expect("quickstart must be valid");
    let poolctl = PoolctlArgs::parse_from(["poolctl", "status"]);
    assert_eq!(config.daemon.control_socket, poolctl.socket);
    assert!(
        config.daemon.state_dir.starts_with("/run/poold"),
        "quick-start state lives under /run/poold: {}",
        config.daemon.state_dir.display()
    );
}
