//! The adapter's pure parts (the sandbox config it derives); the real runtime runs in
//! tests/sandbox_*.rs and the e2e tests.

use super::*;

fn config_with_state_dir(dir: &str) -> Config {
    let text = format!(
        "[daemon]\nstate_dir = \"{dir}\"\n\n[[service]]\nname = \"web\"\n\
         listen = \"127.0.0.1:8080\"\nworkers = 1\nport = 8080\nrootfs = \"host\"\n\
         command = [\"/bin/true\"]\n"
    );
    Config::parse(&text, std::path::Path::new("test.toml")).expect("valid config")
}

#[test]
fn instances_with_other_state_dirs_never_share_a_link_prefix() {
    let a = sandbox_config(&config_with_state_dir("/run/poold-a"));
    let b = sandbox_config(&config_with_state_dir("/run/poold-b"));
    assert_ne!(a.link_prefix, b.link_prefix);
    // Stable across restarts of the same instance.
    let a_again = sandbox_config(&config_with_state_dir("/run/poold-a"));
    assert_eq!(a.link_prefix, a_again.link_prefix);
    // pd + tag + 8 hex worker id fits IFNAMSIZ - 1.
    assert!(a.link_prefix.len() + 8 <= 15, "{}", a.link_prefix);
}
