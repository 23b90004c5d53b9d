//! Real workers (root needed): isolation seen from inside, overlay, limits, network, signals,
//! teardown and orphan cleanup. Each test has its own tag (subnet 10.213.<tag>.0/24).

mod sandbox_support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use poold::sandbox::{ExitStatus, Limits, NetworkMode, Output, RootFs, SandboxError, WorkerSpec};
use sandbox_support::{eventually, TestSandbox};

fn sh(t: &TestSandbox, name: &str, script: &str) -> WorkerSpec {
    let mut spec = WorkerSpec::new(name, RootFs::Dir(t.rootfs.clone()), "sh");
    spec.args = vec!["-c".into(), script.into()];
    spec.network = NetworkMode::Isolated;
    spec
}

fn output_to(spec: &mut WorkerSpec, path: &Path) {
    spec.output = Output::File(path.to_path_buf());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inside_of_a_worker_is_isolated_and_unprivileged() {
    let t = TestSandbox::new(1);
    let marker = t.dir.path().join("host-only-marker");
    std::fs::write(&marker, "x").unwrap();
    let out = t.dir.path().join("out.txt");
    let script = format!(
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; \
         echo init=$(tr '\\0' ' ' < /proc/1/cmdline); \
         echo pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); \
         echo uid=$(id -u) gid=$(id -g); echo host=$(hostname); \
         test -e {} && echo marker=visible || echo marker=hidden; \
         test -e /work && echo work=visible || echo work=hidden; \
         echo root=$(ls / | tr '\\n' ' ')",
        marker.display()
    );
    let mut spec = sh(&t, "inside", &script);
    spec.user = Some("nobody".into());
    spec.hostname = Some("pd-inside".into());
    output_to(&mut spec, &out);
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    let exit = w.wait().await.unwrap();
    assert_eq!(exit.status, ExitStatus::Code(0));
    w.destroy().await.unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("CapPrm:\t0000000000000000"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(
        text.contains("__poold-worker-init"),
        "PID 1 is the init: {text}"
    );
    let pids: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("pids="))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|&p| p < 50),
        "only the worker's pids: {pids:?}"
    );
    assert!(text.contains("uid=65534 gid=65534"), "{text}");
    assert!(text.contains("host=pd-inside"), "{text}");
    assert!(
        text.contains("marker=hidden") && text.contains("work=hidden"),
        "{text}"
    );
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_land_in_the_overlay_and_go_with_the_worker() {
    let t = TestSandbox::new(2);
    let out = t.dir.path().join("out.txt");
    let mut spec = sh(
        &t,
        "writer",
        "echo data > /written; echo >> /etc/passwd; echo done; sleep 600",
    );
    output_to(&mut spec, &out);
    let w = t.sandbox.spawn(spec).await.unwrap();
    let upper = t
        .config()
        .state_dir
        .join("workers")
        .join(w.id())
        .join("upper");
    eventually("worker wrote", || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("done"))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(upper.join("written")).unwrap(),
        "data\n"
    );
    assert!(
        !t.rootfs.join("written").exists(),
        "the shared root stays untouched"
    );
    let passwd = std::fs::read_to_string(t.rootfs.join("etc/passwd")).unwrap();
    assert!(!passwd.ends_with("\n\n"));
    w.destroy().await.unwrap();
    assert!(!upper.exists());

    let spec = sh(&t, "reader", "test -e /written && exit 3; exit 0");
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    assert_eq!(
        w.wait().await.unwrap().status,
        ExitStatus::Code(0),
        "the write is gone"
    );
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_root_has_a_writable_tmp() {
    let t = TestSandbox::new(3);
    let mut spec = sh(
        &t,
        "ro",
        "touch /x 2>/dev/null && exit 3; echo ok > /tmp/y || exit 4; exit 0",
    );
    spec.read_only_root = true;
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    assert_eq!(w.wait().await.unwrap().status, ExitStatus::Code(0));
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let t = TestSandbox::new(4);
    let mut spec = sh(&t, "hog", "dd if=/dev/zero of=/dev/null bs=256M count=1");
    spec.limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    spec.output = Output::Null;
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    let exit = w.wait().await.unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_ne!(exit.status, ExitStatus::Code(0));
    assert!(w.resource_reader().usage().unwrap().oom_kills >= 1);
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

fn read_pids_file(cgroup: &str, file: &str) -> Option<String> {
    [
        Path::new("/sys/fs/cgroup/pids").join(cgroup),
        Path::new("/sys/fs/cgroup").join(cgroup),
    ]
    .iter()
    .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    let t = TestSandbox::new(5);
    let mut spec = sh(&t, "bomb", "b() { b | b & }; b; sleep 600");
    spec.limits = Limits {
        pids: Some(32),
        ..Limits::default()
    };
    spec.output = Output::Null;
    let w = t.sandbox.spawn(spec).await.unwrap();
    let cg = w.cgroup().unwrap().to_string();
    let refused = eventually("pids limit hit", || {
        let events = read_pids_file(&cg, "pids.events")?;
        let n: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max "))?
            .trim()
            .parse()
            .ok()?;
        (n > 0).then_some(n)
    })
    .await;
    assert!(refused > 0);
    let current: u64 = read_pids_file(&cg, "pids.current")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 32, "pids.current {current}");
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridged_worker_answers_at_its_address() {
    let t = TestSandbox::new(6);
    let mut spec = WorkerSpec::new("web", RootFs::Dir(t.rootfs.clone()), "httpd");
    spec.args = ["-f", "-p", "8080", "-h", "/www"]
        .map(String::from)
        .to_vec();
    spec.user = Some("www".into());
    spec.output = Output::Null;
    let w = t.sandbox.spawn(spec).await.unwrap();
    let addr = w.address().expect("bridged workers have an address");
    assert_eq!(addr.octets()[..3], [10, 213, 6]);
    let (link, netns) = w.net_objects().unwrap();
    let (link, netns) = (link.to_string(), netns.to_path_buf());
    assert!(Path::new("/sys/class/net").join(&link).exists());
    let body = eventually("httpd answers", || {
        let mut s =
            std::net::TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_secs(2))
                .ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        Some(r)
    })
    .await;
    assert!(
        body.starts_with("HTTP/1.") && body.contains("hello from the worker"),
        "{body}"
    );
    w.destroy().await.unwrap();
    assert!(!Path::new("/sys/class/net").join(&link).exists());
    assert!(!netns.exists());
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reaches_the_program() {
    let t = TestSandbox::new(7);
    let out = t.dir.path().join("out.txt");
    let mut spec = sh(
        &t,
        "term",
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1; done",
    );
    output_to(&mut spec, &out);
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    eventually("trap set", || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("ready"))
    })
    .await;
    let exit = w.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(exit.status, ExitStatus::Code(42));
    assert!(!exit.oom_killed);
    assert!(std::fs::read_to_string(&out).unwrap().contains("got-term"));
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_ignoring_sigterm_is_killed_after_the_grace() {
    let t = TestSandbox::new(8);
    let out = t.dir.path().join("out.txt");
    let mut spec = sh(
        &t,
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    );
    output_to(&mut spec, &out);
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    eventually("trap set", || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("ready"))
    })
    .await;
    let exit = w.stop(Duration::from_millis(300)).await.unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(9));
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_fail_clearly_and_leave_nothing() {
    let t = TestSandbox::new(9);
    let cases: Vec<(WorkerSpec, &str)> = vec![
        (
            WorkerSpec::new("a", RootFs::Dir("/nonexistent/poold-root".into()), "sh"),
            "`rootfs`",
        ),
        (
            sh(&t, "b", "").tap(|s| s.command = "/bin/nothing-here".into()),
            "`command`",
        ),
        (
            sh(&t, "c", "").tap(|s| s.user = Some("mallory".into())),
            "unknown user \"mallory\"",
        ),
        (
            sh(&t, "d", "").tap(|s| s.limits.pids = Some(0)),
            "limits.pids",
        ),
        (
            sh(&t, "e", "").tap(|s| s.limits.memory_bytes = Some(1)),
            "limits.memory_bytes",
        ),
        (
            sh(&t, "f", "").tap(|s| s.workdir = "/no/such/dir".into()),
            "workdir /no/such/dir",
        ),
        (
            sh(&t, "g", "")
                .tap(|s| s.network = NetworkMode::Bridged)
                .tap(|s| {
                    s.mounts.push(poold::sandbox::BindMount {
                        source: "/etc/hostname-does-not-exist".into(),
                        target: "/x".into(),
                        read_only: true,
                    })
                }),
            "mounts.source",
        ),
    ];
    for (spec, want) in cases {
        let e = t.sandbox.spawn(spec).await.unwrap_err();
        assert!(e.to_string().contains(want), "{e} should mention {want}");
        t.assert_nothing_left();
    }
    // A failure inside the helper (after cgroup and network were made) also cleans up.
    let mut spec = sh(&t, "h", "true");
    spec.network = NetworkMode::Bridged;
    spec.workdir = "/missing".into();
    let e = t.sandbox.spawn(spec).await.unwrap_err();
    assert!(matches!(e, SandboxError::Setup { .. }), "{e}");
    t.assert_nothing_left();
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl Tap for WorkerSpec {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tarball_and_host_roots_run() {
    let t = TestSandbox::new(10);
    let tarball = t.dir.path().join("image.tar.gz");
    {
        let f = std::fs::File::create(&tarball).unwrap();
        let gz = flate2_encoder(f);
        let mut b = tar::Builder::new(gz);
        b.follow_symlinks(false);
        b.append_dir_all(".", &t.rootfs).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let out = t.dir.path().join("out.txt");
    let mut spec = WorkerSpec::new("tar", RootFs::Tarball(tarball), "cat");
    spec.args = vec!["/www/index.html".into()];
    spec.network = NetworkMode::Host;
    output_to(&mut spec, &out);
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    assert_eq!(w.wait().await.unwrap().status, ExitStatus::Code(0));
    w.destroy().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "hello from the worker\n"
    );

    let mut spec = WorkerSpec::new("host", RootFs::Host, "/bin/sh");
    spec.args = vec![
        "-c".into(),
        "test -e /work && exit 3; test -e /usr/bin && exit 0; exit 4".into(),
    ];
    spec.network = NetworkMode::Isolated;
    let mut w = t.sandbox.spawn(spec).await.unwrap();
    assert_eq!(w.wait().await.unwrap().status, ExitStatus::Code(0));
    w.destroy().await.unwrap();
    t.assert_nothing_left();
}

fn flate2_encoder(f: std::fs::File) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(f, flate2::Compression::fast())
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_orphans_removes_what_a_crashed_run_left() {
    let t = TestSandbox::new(11);
    let mut spec = sh(&t, "orphan", "sleep 600");
    spec.network = NetworkMode::Bridged;
    spec.output = Output::Null;
    let w = t.sandbox.spawn(spec).await.unwrap();
    let id = w.id().to_string();
    // A crash: the handle vanishes without teardown.
    std::mem::forget(w);
    let report = t.sandbox.cleanup_orphans().await.unwrap();
    assert!(
        report.cgroups.iter().any(|c| c.ends_with(&id)),
        "{report:?}"
    );
    assert!(report.links.iter().any(|l| l.ends_with(&id)), "{report:?}");
    assert_eq!(report.netns.len(), 1, "{report:?}");
    assert_eq!(report.worker_dirs.len(), 1, "{report:?}");
    t.assert_nothing_left();
}
