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
