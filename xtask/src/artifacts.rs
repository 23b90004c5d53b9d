//! Build the workspace's test binaries and binaries, collected from cargo's JSON messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug)]
pub struct TestBinary {
    pub executable: PathBuf,
    /// The package directory: cargo runs tests there, so the VM does too.
    pub package_dir: PathBuf,
}

#[derive(Debug, Default)]
pub struct Artifacts {
    pub tests: Vec<TestBinary>,
    pub bins: Vec<PathBuf>,
}

fn cargo_json(root: &Path, args: &[&str]) -> Result<Vec<Value>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !out.status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect())
}

/// Build the workspace binaries and, with `tests`, every test binary.
pub fn build(root: &Path, tests: bool, release: bool) -> Result<Artifacts> {
    let mut artifacts = Artifacts::default();
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let test_messages = if tests {
        cargo_json(
            root,
            &[&["test", "--workspace", "--no-run"], profile].concat(),
        )?
    } else {
        Vec::new()
    };
    for msg in test_messages {
        if msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        artifacts.tests.push(TestBinary {
            executable: exe.into(),
            package_dir: Path::new(manifest).parent().unwrap_or(root).to_path_buf(),
        });
    }
    for msg in cargo_json(
        root,
        &[&["build", "--workspace", "--bins"], profile].concat(),
    )? {
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let (true, Some(exe)) = (is_bin, msg["executable"].as_str()) {
            artifacts.bins.push(exe.into());
        }
    }
    artifacts
        .tests
        .sort_by(|a, b| a.executable.cmp(&b.executable));
    artifacts
        .tests
        .dedup_by(|a, b| a.executable == b.executable);
    artifacts.bins.sort();
    artifacts.bins.dedup();
    Ok(artifacts)
}
