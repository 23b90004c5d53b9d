//! `poolctl reload` and `poolctl deploy` against the real poold with the in-process proxy,
//! wrk running through every step with zero failed requests.

use super::images::{finish_wrk, start_wrk};
use super::{http_service, try_status, Daemon};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn text(output: &Output) -> (bool, String, String) {
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

/// `poolctl ARGS` killed after two minutes (a deploy --wait that never ends fails the test
/// instead of hanging it).
fn poolctl_bounded(daemon: &Daemon, args: &[&str]) -> Output {
    std::process::Command::new("timeout")
        .args(["-s", "KILL", "120"])
        .arg(env!("CARGO_BIN_EXE_poolctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .output()
        .unwrap()
}

/// The config file's `[daemon]` and `[network]` part (everything before the services).
fn config_head(daemon: &Daemon) -> String {
    let text = std::fs::read_to_string(daemon.config_path()).unwrap();
    let end = text.find("\n[[service]]").expect("the config has services");
    text[..end].to_owned()
}

/// Writes a new config file: the same daemon, these `services` (`{rootfs}` as in
/// [`Daemon::start`]).
pub(super) fn rewrite_services(daemon: &Daemon, services: &str) {
    let rootfs = daemon.dir().join("rootfs");
    let text = format!(
        "{}\n{}",
        config_head(daemon),
        services.replace("{rootfs}", &rootfs.display().to_string())
    );
    std::fs::write(daemon.config_path(), text).unwrap();
}

/// Polls `poolctl status` for `service` until `done` holds (at most two minutes).
fn wait_for(daemon: &Daemon, service: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(status) = try_status(&daemon.socket(), service) {
            if done(&status) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{service}: never {what}; status {:?}\nlog:\n{}",
            try_status(&daemon.socket(), service),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every worker ready and of `generation`, `workers` of them, no rollout under way.
fn all_at(status: &Value, generation: u64, workers: usize) -> bool {
    let list = status["workers"].as_array().unwrap();
    status["generation"] == generation
        && status["rolling_out"].is_null()
        && list.len() == workers
        && list
            .iter()
            .all(|w| w["state"] == "ready" && w["generation"] == generation)
}

/// One page through the service's listener.
fn page(listen: &str) -> String {
    let mut stream = TcpStream::connect(listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// A reload that adds one service, removes one and changes one's command (its workers
/// replaced, generation 2); a bad file and a daemon-level change that change nothing.
pub fn reload_adds_removes_and_rolls() {
    let web = format!("127.0.0.1:{}", super::free_port());
    let old = format!("127.0.0.1:{}", super::free_port());
    let new = format!("127.0.0.1:{}", super::free_port());
    let services = format!(
        "{}{}",
        http_service("web", &web, 2, ""),
        http_service("old", &old, 1, "")
    );
    let mut daemon = Daemon::start("proxy", &services);
    let before = daemon.wait_ready("web", 2);
    daemon.wait_ready("old", 1);
    assert_eq!(before["generation"], 1, "{before}");
    let wrk = start_wrk(&format!("http://{web}/"));
    std::thread::sleep(Duration::from_secs(2));

    // web's command gains -v (verbose): what a worker is changes.
    let changed_web =
        http_service("web", &web, 2, "").replace(r#""-h", "/www"]"#, r#""-h", "/www", "-v"]"#);
    assert_ne!(changed_web, http_service("web", &web, 2, ""));
    rewrite_services(
        &daemon,
        &format!("{changed_web}{}", http_service("new", &new, 1, "")),
    );
    let (ok, out, err) = text(&daemon.poolctl(&["reload"]));
    assert!(ok, "reload failed: {err}\nlog:\n{}", daemon.log());
    assert!(out.contains("new: added"), "{out}");
    assert!(out.contains("old: removed"), "{out}");
    assert!(
        out.contains("web: generation 2") && out.contains("rolling every worker for: command"),
        "{out}"
    );
    let after = wait_for(&daemon, "web", "all at generation 2", |s| all_at(s, 2, 2));
    let old_ids = super::worker_ids(&before);
    assert!(
        super::worker_ids(&after)
            .iter()
            .all(|id| !old_ids.contains(id)),
        "every web worker replaced: {before} -> {after}"
    );
    wait_for(&daemon, "new", "ready", |s| s["ready"] == 1);
    let gone = try_status(&daemon.socket(), "old").unwrap_err();
    assert!(gone.contains("no service old"), "{gone}");
    let (code, body) = daemon.http_get("/ready/old");
    assert_eq!(code, 404, "{body}");
    let (code, body) = daemon.http_get("/ready");
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("\"old\"") && body.contains("\"new\""),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&old).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed service still listens"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(page(&new).contains("hello from a poold worker"));

    // A bad file: nothing changes, the error names file:line:key.
    let good = std::fs::read_to_string(daemon.config_path()).unwrap();
    let bad = good.replacen("workers = 2", "workers = \"two\"", 1);
    let bad_line = bad
        .lines()
        .position(|l| l.contains("\"two\""))
        .expect("the bad line")
        + 1;
    std::fs::write(daemon.config_path(), &bad).unwrap();
    let (ok, _, err) = text(&daemon.poolctl(&["reload"]));
    assert!(!ok, "a bad config was accepted");
    let location = format!("{}:{bad_line}:", daemon.config_path().display());
    assert!(
        err.contains(&location) && err.contains("workers") && err.contains("nothing changed"),
        "expected {location} in: {err}"
    );
    // A daemon-level change is refused with its key and why.
    std::fs::write(
        daemon.config_path(),
        good.replacen("log_level = \"info\"", "log_level = \"debug\"", 1),
    )
    .unwrap();
    let (ok, _, err) = text(&daemon.poolctl(&["reload"]));
    assert!(
        !ok && err.contains("daemon.log_level") && err.contains("restart poold"),
        "{err}"
    );
    let unchanged = try_status(&daemon.socket(), "web").unwrap();
    assert!(all_at(&unchanged, 2, 2), "{unchanged}");
    assert_eq!(
        super::worker_ids(&unchanged),
        super::worker_ids(&after),
        "nothing changed"
    );

    finish_wrk(wrk, "web through the reload", &daemon);
    daemon.stop();
    super::assert_no_unexpected_trouble(&daemon.log(), &[]);
}

fn make_root(dir: &Path, page: &str, with_busybox: bool) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    if with_busybox {
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    }
    std::fs::write(dir.join("www/index.html"), page).unwrap();
}

/// A deploy to a new root directory that serves another page, then one to a root without
/// the command: rolled back, the previous workers serving, a non-zero exit naming the slot
/// and the failure.
pub fn deploy_and_roll_back() {
    let web = format!("127.0.0.1:{}", super::free_port());
    let mut daemon = Daemon::start("proxy", &http_service("web", &web, 2, ""));
    daemon.wait_ready("web", 2);
    let wrk = start_wrk(&format!("http://{web}/"));
    std::thread::sleep(Duration::from_secs(2));

    let v2 = daemon.dir().join("rootfs-v2");
    make_root(&v2, "hello from generation two\n", true);
    let (ok, out, err) = text(&poolctl_bounded(
        &daemon,
        &[
            "deploy",
            "web",
            "--rootfs",
            &v2.display().to_string(),
            "--wait",
        ],
    ));
    assert!(ok, "deploy failed: {err}\nlog:\n{}", daemon.log());
    assert_eq!(out, "web: deployed generation 2");
    let deployed = wait_for(&daemon, "web", "all at generation 2", |s| all_at(s, 2, 2));
    assert_eq!(
        deployed["deployed_rootfs"],
        v2.display().to_string(),
        "{deployed}"
    );
    assert!(page(&web).contains("hello from generation two"));

    let broken = daemon.dir().join("rootfs-broken");
    make_root(&broken, "never served\n", false);
    let (ok, _, err) = text(&poolctl_bounded(
        &daemon,
        &[
            "deploy",
            "web",
            "--rootfs",
            &broken.display().to_string(),
            "--wait",
        ],
    ));
    assert!(!ok, "a deploy of a root without the command succeeded");
    assert!(
        err.starts_with("poolctl: service web: deploy of generation 3 failed at slot ")
            && err.contains("rolled back to generation 2"),
        "{err}"
    );
    let rolled_back = wait_for(&daemon, "web", "back at generation 2", |s| all_at(s, 2, 2));
    assert_eq!(
        super::worker_ids(&rolled_back),
        super::worker_ids(&deployed),
        "the old workers kept serving"
    );
    assert_eq!(rolled_back["deployed_rootfs"], v2.display().to_string());
    assert!(page(&web).contains("hello from generation two"));
    // One in flight per service: a second deploy while one rolls is refused (checked in
    // the supervisor's tests); an unknown root is refused before anything starts.
    let (ok, _, err) = text(&daemon.poolctl(&["deploy", "web", "--rootfs", "/nonexistent-root"]));
    assert!(!ok && err.contains("/nonexistent-root"), "{err}");

    finish_wrk(wrk, "web through the deploys", &daemon);
    daemon.stop();
    super::assert_no_unexpected_trouble(&daemon.log(), &["deploy of generation 3 failed"]);
}
