//! Checks that the VM test harness provides what poold's VM tests rely on: cgroup v2 with
//! controllers enabled, the IPVS module, and ipvsadm. Runs only in the VM
//! (`cargo xtask vm-test`), where ignored tests are included.

use std::fs;
use std::process::Command;

#[test]
#[ignore = "vm: needs cgroup v2 mounted by the VM init"]
fn cgroup_v2_offers_memory_pids_cpu() {
    let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .expect("cgroup2 is mounted at /sys/fs/cgroup");
    let controllers: Vec<&str> = controllers.split_whitespace().collect();
    for wanted in ["memory", "pids", "cpu"] {
        assert!(
            controllers.contains(&wanted),
            "{wanted} missing from {controllers:?}"
        );
    }
    let enabled = fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap();
    assert!(
        enabled.split_whitespace().any(|c| c == "memory"),
        "memory not enabled for children: {enabled:?}"
    );
}

#[test]
#[ignore = "vm: needs IPVS"]
fn ipvs_module_is_loaded() {
    let table = fs::read_to_string("/proc/net/ip_vs").expect("/proc/net/ip_vs exists");
    assert!(
        table.starts_with("IP Virtual Server version"),
        "unexpected /proc/net/ip_vs: {table:?}"
    );
}

#[test]
#[ignore = "vm: needs IPVS"]
fn ipvsadm_lists_the_empty_table() {
    let out = Command::new("/usr/sbin/ipvsadm")
        .arg("-Ln")
        .output()
        .expect("run /usr/sbin/ipvsadm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ipvsadm -Ln failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("IP Virtual Server"), "{stdout}");
}
