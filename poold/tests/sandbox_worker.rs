//! Real workers (root needed): isolation seen from inside, overlay, limits, network, signals,
//! teardown and orphan cleanup. Each test has its own tag (subnet 10.213.<tag>.0/24).

mod sandbox_support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use poold::sandbox::{
    ContainerExit, ContainerSpec, Limits, NetworkMode, Output, RootFs, RootSwitch, SandboxError,
    Tmpfs,
};
use sandbox_support::{cgroup_dirs_named, eventually, output_containing, TestSandbox};

/// Wrapped in `sandbox` so `--filter sandbox` (e.g. `cargo xtask vm-test --filter sandbox`)
/// selects every test here.
mod sandbox {
    use super::*;

    fn sh(t: &TestSandbox, name: &str, script: &str) -> ContainerSpec {
        let mut spec = ContainerSpec::new(name, RootFs::Dir(t.rootfs.clone()), "sh");
        spec.args = vec!["-c".into(), script.into()];
        spec.network = NetworkMode::Isolated;
        spec
    }

    fn output_to(spec: &mut ContainerSpec, path: &Path) {
        spec.output = Output::File(path.to_path_buf());
    }

    /// Whether this host's `/` is the initramfs (mountinfo says `rootfs`), where pivot_root
    /// cannot work: the VM harness boots into one.
    fn host_root_is_initramfs() -> bool {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap();
        root.split(" - ").nth(1).unwrap().starts_with("rootfs ")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_root_is_pivoted_into_and_chroot_only_on_the_initramfs() {
        let t = TestSandbox::new(18);
        let mut c = t.sandbox.spawn(sh(&t, "pivot", "true")).await.unwrap();
        let expected = if host_root_is_initramfs() {
            RootSwitch::Chroot
        } else {
            RootSwitch::PivotRoot
        };
        assert_eq!(c.root_switch(), expected);
        assert_eq!(c.wait().await.unwrap(), ContainerExit::Code(0));
        c.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    /// poold itself ignores SIGPIPE (Rust's runtime does) and exec keeps ignored signals:
    /// without a reset every worker would start with SIGPIPE ignored, and `cmd | head` in its
    /// shell scripts would spin on EPIPE instead of ending.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_worker_starts_with_no_signal_ignored_or_blocked() {
        let t = TestSandbox::new(19);
        let out = t.dir.path().join("out.txt");
        let mut spec = sh(
            &t,
            "signals",
            "exec grep -E '^Sig(Ign|Blk)' /proc/self/status",
        );
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
        t.assert_nothing_left();
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
             echo root=$(ls / | tr '\\n' ' '); \
             echo x > /dev/null && echo devnull=ok; echo urandom=$(head -c 4 /dev/urandom | wc -c); \
             echo full=$(echo x 2>&1 > /dev/full | grep -c 'No space')",
            marker.display()
        );
        let mut spec = sh(&t, "inside", &script);
        spec.user = Some("nobody".into());
        spec.hostname = Some("pd-inside".into());
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        let exit = w.wait().await.unwrap();
        assert_eq!(exit, ContainerExit::Code(0));
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
        assert!(
            text.contains("devnull=ok") && text.contains("urandom=4"),
            "{text}"
        );
        assert!(text.contains("full=1"), "/dev/full: {text}");
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn listed_capabilities_are_kept_for_a_non_root_user() {
        let t = TestSandbox::new(13);
        let out = t.dir.path().join("out.txt");
        let script = "grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status; echo uid=$(id -u)";
        let mut spec = sh(&t, "caps", script);
        spec.user = Some("www".into());
        spec.capabilities = vec![caps::Capability::CAP_NET_BIND_SERVICE];
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            // CAP_NET_BIND_SERVICE is bit 10.
            assert!(
                text.contains(&format!("{set}:\t0000000000000400")),
                "{set}: {text}"
            );
        }
        assert!(text.contains("uid=33"), "{text}");
        t.assert_nothing_left();
    }

    /// Issue 11: a read-only root with writable tmpfs paths; a tmpfs takes the mode and owner
    /// of the image's directory, so a service user can write its own directory.
    #[tokio::test(flavor = "multi_thread")]
    async fn tmpfs_paths_are_writable_in_a_read_only_root() {
        use std::os::unix::fs::PermissionsExt;
        let t = TestSandbox::new(45);
        let app = t.rootfs.join("var/lib/app");
        std::fs::create_dir_all(&app).unwrap();
        std::os::unix::fs::chown(&app, Some(33), Some(33)).unwrap();
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(app.join("from-image"), "x").unwrap();
        let out = t.dir.path().join("out.txt");
        let script = "touch /rootfile 2>/dev/null && echo root=writable || echo root=read-only; \
                      touch /var/lib/app/new && echo app=writable; \
                      test -e /var/lib/app/from-image && echo app=image || echo app=empty; \
                      ls -ldn /var/lib/app; grep -E ' /(run|var/lib/app) ' /proc/mounts";
        let mut spec = sh(&t, "tmpfs", script);
        spec.user = Some("www".into());
        spec.read_only_root = true;
        spec.tmpfs = vec![
            Tmpfs {
                target: "/var/lib/app".into(),
                size_bytes: 4 << 20,
            },
            Tmpfs {
                target: "/run".into(),
                size_bytes: 1 << 20,
            },
        ];
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("root=read-only"), "{text}");
        assert!(
            text.contains("app=writable") && text.contains("app=empty"),
            "{text}"
        );
        assert!(
            text.contains("drwxr-x---") && text.contains(" 33 "),
            "{text}"
        );
        let run = text
            .lines()
            .find(|l| l.contains(" /run "))
            .unwrap_or_default();
        assert!(
            run.starts_with("tmpfs") && run.contains("size=1024k"),
            "{text}"
        );
        assert!(!app.join("new").exists(), "the image is untouched");
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_land_in_the_tmpfs_overlay_and_go_with_the_worker() {
        writes_land_in_the_overlay(TestSandbox::with_layer(2, Some(64))).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_land_in_the_disk_overlay_and_go_with_the_worker() {
        writes_land_in_the_overlay(TestSandbox::with_layer(12, None)).await;
    }

    async fn writes_land_in_the_overlay(t: TestSandbox) {
        let out = t.dir.path().join("out.txt");
        let mut spec = sh(
            &t,
            "writer",
            "echo data > /written; echo >> /etc/passwd; echo done; sleep 600",
        );
        output_to(&mut spec, &out);
        let w = t.sandbox.spawn(spec).await.unwrap();
        output_containing(&out, "done").await;
        // The worker's view (through its helper, which shares its mount namespace and root).
        let inside = Path::new("/proc").join(w.pid().to_string()).join("root");
        assert_eq!(
            std::fs::read_to_string(inside.join("written")).unwrap(),
            "data\n"
        );
        assert!(
            !t.rootfs.join("written").exists(),
            "the shared root stays untouched"
        );
        let passwd = std::fs::read_to_string(t.rootfs.join("etc/passwd")).unwrap();
        assert!(!passwd.ends_with("\n\n"));
        let upper = t
            .config()
            .state_dir
            .join("workers")
            .join(w.id().as_str())
            .join("upper");
        if t.config().writable_tmpfs_mib.is_none() {
            assert_eq!(
                std::fs::read_to_string(upper.join("written")).unwrap(),
                "data\n"
            );
        } else {
            assert!(!upper.exists(), "the tmpfs layer is invisible on the host");
        }
        w.destroy().await.unwrap();
        assert!(!upper.exists());

        let spec = sh(&t, "reader", "test -e /written && exit 3; exit 0");
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(
            w.wait().await.unwrap(),
            ContainerExit::Code(0),
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
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bind_mounts_are_visible_with_their_mode() {
        let t = TestSandbox::new(16);
        let (ro, rw) = (t.dir.path().join("ro"), t.dir.path().join("rw"));
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::write(ro.join("file"), "shared\n").unwrap();
        let script = "test \"$(cat /data/ro/file)\" = shared || exit 3; \
                      touch /data/ro/new 2>/dev/null && exit 4; \
                      echo out > /data/rw/new || exit 5; exit 0";
        let mut spec = sh(&t, "binds", script);
        spec.mounts = vec![
            poold::sandbox::BindMount {
                source: ro.clone(),
                target: "/data/ro".into(),
                read_only: true,
            },
            poold::sandbox::BindMount {
                source: rw.clone(),
                target: "/data/rw".into(),
                read_only: false,
            },
        ];
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        assert!(!ro.join("new").exists());
        assert_eq!(std::fs::read_to_string(rw.join("new")).unwrap(), "out\n");
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
        assert_ne!(exit, ContainerExit::Code(0));
        assert!(w.usage_reader().usage().unwrap().oom_kills >= 1);
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

    fn cgroup_file(cgroup: &str, v1_controller: &str, file: &str) -> Option<String> {
        [
            Path::new("/sys/fs/cgroup").join(v1_controller).join(cgroup),
            Path::new("/sys/fs/cgroup").join(cgroup),
        ]
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn limits_and_rlimits_reach_the_kernel_and_usage_is_read() {
        let t = TestSandbox::new(15);
        let out = t.dir.path().join("out.txt");
        let script = "echo nofile=$(ulimit -n); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
                      echo busy-done; sleep 600";
        let mut spec = sh(&t, "limits", script);
        spec.limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millicores: Some(500),
            pids: Some(100),
        };
        spec.rlimits = vec![poold::sandbox::Rlimit {
            resource: poold::sandbox::RlimitResource::Nofile,
            soft: 64,
            hard: 128,
        }];
        output_to(&mut spec, &out);
        let w = t.sandbox.spawn(spec).await.unwrap();
        let cg = w.cgroup().unwrap().to_string();
        let text = output_containing(&out, "busy-done").await;
        assert!(text.contains("nofile=64"), "{text}");
        let mem = cgroup_file(&cg, "memory", "memory.limit_in_bytes")
            .or_else(|| cgroup_file(&cg, "memory", "memory.max"))
            .unwrap();
        assert_eq!(mem.trim(), (64u64 << 20).to_string());
        let cpu = cgroup_file(&cg, "cpu", "cpu.cfs_quota_us")
            .or_else(|| cgroup_file(&cg, "cpu", "cpu.max"))
            .unwrap();
        assert!(
            cpu.trim() == "50000" || cpu.trim() == "50000 100000",
            "{cpu}"
        );
        assert_eq!(cgroup_file(&cg, "pids", "pids.max").unwrap().trim(), "100");
        let usage = w.usage_reader().usage().unwrap();
        assert!(usage.memory_bytes > 0, "{usage:?}");
        assert!(usage.cpu_time > Duration::ZERO, "{usage:?}");
        assert_eq!(usage.oom_kills, 0);
        w.destroy().await.unwrap();
        t.assert_nothing_left();
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
        let mut spec = ContainerSpec::new("web", RootFs::Dir(t.rootfs.clone()), "httpd");
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
    async fn concurrent_bridged_workers_get_distinct_addresses_and_all_answer() {
        let t = TestSandbox::new(17);
        let spawns = (0..6).map(|i| {
            let mut spec =
                ContainerSpec::new(format!("web{i}"), RootFs::Dir(t.rootfs.clone()), "httpd");
            spec.args = ["-f", "-p", "8080", "-h", "/www"]
                .map(String::from)
                .to_vec();
            spec.output = Output::Null;
            t.sandbox.spawn(spec)
        });
        let workers: Vec<_> = futures::future::join_all(spawns)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let mut addrs: Vec<_> = workers.iter().map(|w| w.address().unwrap()).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 6, "distinct addresses: {addrs:?}");
        for addr in addrs {
            eventually("httpd answers", || {
                let mut s = std::net::TcpStream::connect_timeout(
                    &(addr, 8080).into(),
                    Duration::from_secs(2),
                )
                .ok()?;
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
                let mut r = String::new();
                s.read_to_string(&mut r).ok()?;
                r.contains("hello from the worker").then_some(())
            })
            .await;
        }
        futures::future::join_all(workers.into_iter().map(|w| w.destroy()))
            .await
            .into_iter()
            .for_each(Result::unwrap);
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
        output_containing(&out, "ready").await;
        let exit = w.stop(Duration::from_secs(30)).await.unwrap();
        assert_eq!(exit, ContainerExit::Code(42));
        assert_eq!(w.usage_reader().usage().unwrap().oom_kills, 0);
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
        output_containing(&out, "ready").await;
        let exit = w.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(exit, ContainerExit::Signal(9));
        w.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sigkill_to_the_helper_ends_the_whole_worker() {
        let t = TestSandbox::new(14);
        let mut spec = sh(&t, "killed", "sleep 600 & sleep 600");
        spec.output = Output::Null;
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        let cg = w.cgroup().unwrap().to_string();
        w.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
        let exit = w.wait().await.unwrap();
        assert_eq!(exit, ContainerExit::Signal(9));
        // The init and the program die with the helper (nothing needs the cgroup kill).
        eventually("worker processes gone", || {
            read_pids_file(&cg, "cgroup.procs").filter(|p| p.trim().is_empty())
        })
        .await;
        w.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_specs_fail_clearly_and_leave_nothing() {
        let t = TestSandbox::new(9);
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (
                ContainerSpec::new("a", RootFs::Dir("/nonexistent/poold-root".into()), "sh"),
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
                "workdir: chdir /no/such/dir",
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
    impl Tap for ContainerSpec {
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
        let mut spec = ContainerSpec::new("tar", RootFs::Tarball(tarball), "cat");
        spec.args = vec!["/www/index.html".into()];
        spec.network = NetworkMode::Host;
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "hello from the worker\n"
        );

        let mut spec = ContainerSpec::new("host", RootFs::Host, "/bin/sh");
        spec.args = vec![
            "-c".into(),
            // The host root is read-only apart from /tmp.
            "test -e /work && exit 3; test -e /usr/bin || exit 4; touch /tmp/x || exit 5; \
             touch /usr/x 2>/dev/null && exit 6; exit 0"
                .into(),
        ];
        spec.network = NetworkMode::Isolated;
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    /// Every worker resolves its own hostname from /etc/hosts, with no DNS server (Python's
    /// http.server calls getfqdn() at start; without this it waits for the DNS timeout).
    /// On the host root /etc is the host's, read-only: the worker's files are mounted over it,
    /// privately.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_worker_resolves_its_own_hostname_from_its_hosts_file() {
        let t = TestSandbox::new(40);
        let host_hosts = std::fs::read("/etc/hosts").unwrap();
        let out = t.dir.path().join("host-root.txt");
        let mut spec = ContainerSpec::new("pd-hosts", RootFs::Host, "/bin/sh");
        spec.args = vec![
            "-c".into(),
            // ahostsv4: `getent hosts` asks for IPv6 first, which falls through to DNS.
            "if command -v getent >/dev/null; then \
               echo resolved=$(getent ahostsv4 $(hostname) | head -n 1); \
             else echo resolved=no-getent; fi; \
             echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf"
                .into(),
        ];
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        let addr = w.address().expect("bridged workers have an address");
        let exit = w.wait().await.unwrap();
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(exit, ContainerExit::Code(0), "{text}");
        let parts: Vec<&str> = text.split("---\n").collect();
        assert_eq!(parts.len(), 3, "{text}");
        // The VM's root has busybox only (no getent): there the hosts file alone is checked.
        if parts[0] != "resolved=no-getent\n" {
            let resolved: Vec<&str> = parts[0]
                .trim()
                .trim_start_matches("resolved=")
                .split_whitespace()
                .collect();
            assert_eq!(
                resolved,
                [addr.to_string().as_str(), "STREAM", "pd-hosts"],
                "{text}"
            );
        }
        let hosts = parts[1];
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.contains("::1\tlocalhost"), "{hosts}");
        assert!(hosts.contains(&format!("{addr}\tpd-hosts\n")), "{hosts}");
        assert_eq!(
            parts[2].as_bytes(),
            std::fs::read("/etc/resolv.conf").unwrap_or_default(),
            "resolv.conf is the host's"
        );
        assert_eq!(std::fs::read("/etc/hosts").unwrap(), host_hosts);

        // An image root without an address: 127.0.1.1, as Debian does.
        let out = t.dir.path().join("image-root.txt");
        let mut spec = sh(&t, "pd-noaddr", "cat /etc/hosts");
        output_to(&mut spec, &out);
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        assert_eq!(w.wait().await.unwrap(), ContainerExit::Code(0));
        w.destroy().await.unwrap();
        let hosts = std::fs::read_to_string(&out).unwrap();
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.contains("127.0.1.1\tpd-noaddr\n"), "{hosts}");
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
        // Only its run directory (exit file, output FIFOs): tmpfs layers leave none.
        assert_eq!(
            report.container_dirs,
            vec![t.config().state_dir.join("workers").join(&id)],
            "{report:?}"
        );
        t.assert_nothing_left();
        let parent = &t.config().cgroup_parent;
        assert_eq!(cgroup_dirs_named(parent), Vec::<std::path::PathBuf>::new());
    }

    /// Two instances (each its own state directory) that share a cgroup parent by mistake:
    /// a start's orphan cleanup removes only cgroups its own state directory marks as its,
    /// never the other instance's live worker.
    #[tokio::test(flavor = "multi_thread")]
    async fn cleanup_orphans_leaves_another_instances_cgroups_alone() {
        let t = TestSandbox::new(43);
        let mut spec = sh(&t, "other", "sleep 600");
        spec.output = Output::Null;
        let w = t.sandbox.spawn(spec).await.unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = poold::sandbox::Sandbox::new(poold::sandbox::SandboxConfig {
            state_dir: other_dir.path().join("state"),
            link_prefix: "pdu2b".into(),
            bridge: None,
            ..t.config().clone()
        })
        .unwrap();
        let report = other.cleanup_orphans().await.unwrap();
        assert!(report.cgroups.is_empty(), "{report:?}");
        let pid = nix::unistd::Pid::from_raw(w.pid() as i32);
        assert!(
            nix::sys::signal::kill(pid, None).is_ok(),
            "the other instance's worker was killed"
        );
        assert!(!cgroup_dirs_named(w.cgroup().unwrap()).is_empty());
        w.destroy().await.unwrap();
        t.assert_nothing_left();
    }

    /// At shutdown the parent cgroup goes, but only once empty: never while a worker (or
    /// another poold's nested parent) is in it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_cgroup_parent_is_removed_only_when_empty() {
        let t = TestSandbox::new(41);
        let parent = t.config().cgroup_parent.clone();
        let mut spec = sh(&t, "parent", "sleep 600");
        spec.output = Output::Null;
        let w = t.sandbox.spawn(spec).await.unwrap();
        assert!(!cgroup_dirs_named(&parent).is_empty());
        t.sandbox.remove_cgroup_parent().await.unwrap();
        let cgroup = w.cgroup().unwrap().to_string();
        assert!(
            !cgroup_dirs_named(&cgroup).is_empty(),
            "the worker's cgroup survives"
        );
        w.destroy().await.unwrap();
        assert!(!cgroup_dirs_named(&parent).is_empty(), "not removed yet");
        t.sandbox.remove_cgroup_parent().await.unwrap();
        assert_eq!(cgroup_dirs_named(&parent), Vec::<std::path::PathBuf>::new());
        t.assert_nothing_left();
    }
}
