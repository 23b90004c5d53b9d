//! `poold check FILE` on real files.

use std::process::Command;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poold.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_poold"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn shipped_configs_pass() {
    for file in ["poold.example.toml", "quickstart.toml"] {
        let path = format!("{}/../config/{file}", env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(env!("CARGO_BIN_EXE_poold"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 services)"));
    }
}

#[test]
fn every_problem_is_listed_with_file_line_and_key() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = 0\nport = 0\nrootfs = \"host\"\ncommand = []\n";
    let (ok, _, stderr) = check(text);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "FILE:4:1: service[0].workers: must be at least 1",
            "FILE:5:1: service[0].port: must be a port number from 1 to 65535",
            "FILE:7:1: service[0].command: must name the program to run, e.g. [\"/usr/bin/python3\", \"-m\", \"http.server\", \"8080\"]",
        ],
        "{stderr}"
    );
}

#[test]
fn syntax_error_is_located() {
    let (ok, _, stderr) = check("[daemon]\nbalancer = ipvs\n");
    assert!(!ok);
    assert!(
        stderr.starts_with("FILE:2:12: daemon.balancer: "),
        "{stderr}"
    );
}

#[test]
fn non_utf8_file_gets_line_column_and_key() {
    let mut bytes = b"[daemon]\nlog_level = \"info\"\n[network]\nbridge = \"br".to_vec();
    bytes.extend([0xff, b'"', b'\n']);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poold.toml");
    std::fs::write(&path, &bytes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_poold"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE");
    assert_eq!(
        stderr.trim_end(),
        "FILE:4:13: network.bridge: invalid UTF-8 (byte 0xff): the file must be UTF-8"
    );
}

/// Issue 11: capability names and tmpfs entries are checked, each located to its array item.
#[test]
fn capabilities_and_tmpfs_entries_are_checked_item_by_item() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = 1\nport = 80\n\
                rootfs = \"host\"\ncommand = [\"/usr/sbin/nginx\"]\n\
                capabilities = [\"docker-default\",\n  \"chown\"]\n\
                tmpfs = [\"/run:16M\", \"/var/lib/nginx:lots\"]\n";
    let (ok, _, stderr) = check(text);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "FILE:9:3: service[0].capabilities[1]: \"chown\" is not a capability: expected a name as capabilities(7) spells it (e.g. \"CAP_CHOWN\") or \"docker-default\"; did you mean \"CAP_CHOWN\"?",
            "FILE:10:22: service[0].tmpfs[1]: \"/var/lib/nginx:lots\": invalid size \"lots\"; expected a number of bytes or a number with a suffix K, M, G or T (powers of 1024), e.g. \"256M\"",
        ],
        "{stderr}"
    );
    let fixed = text
        .replace("\"chown\"", "\"CAP_CHOWN\"")
        .replace(":lots", "");
    let (ok, _, stderr) = check(&fixed);
    assert!(ok, "{stderr}");
}
