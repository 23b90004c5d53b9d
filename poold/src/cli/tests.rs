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

#[test]
fn targets_are_service_or_service_slash_slot() {
    let target: Target = "web/2".parse().unwrap();
    assert_eq!((target.service.as_str(), target.slot), ("web", Some(2)));
    let target: Target = "web".parse().unwrap();
    assert_eq!((target.service.as_str(), target.slot), ("web", None));
    for bad in ["web/x", "/1", "", "web/-1"] {
        let error = bad.parse::<Target>().unwrap_err().to_string();
        assert!(error.contains("SERVICE/SLOT"), "{bad}: {error}");
    }
    // `--slot N` keeps working beside SERVICE/SLOT.
    let args = PoolctlArgs::parse_from(["poolctl", "recycle", "web", "--slot", "1"]);
    assert!(matches!(
        args.command,
        PoolctlCommand::Recycle { slot: Some(1), .. }
    ));
    assert!(PoolctlArgs::try_parse_from(["poolctl", "scale", "web", "0"]).is_err());
}
