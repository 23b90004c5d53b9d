//! The worker sandbox against a hostile worker (root needed): /proc hardening, user lookup
//! inside the image, seccomp, user namespaces. Each test has its own tag (subnet
//! 10.213.<tag>.0/24, tags 70..=79).

mod sandbox_support;

use std::path::{Path, PathBuf};

use poold::sandbox::{
    BindMount, ContainerExit, ContainerSpec, IdMap, NetworkMode, Output, RootFs, SeccompMode,
};
use std::io::{Read, Write};

use sandbox_support::{eventually, output_containing, TestSandbox};

/// Wrapped in `sandbox_hardening` so `--filter sandbox_hardening` selects every test here.
mod sandbox_hardening {
    use super::*;

    /// Busybox applets the hostile scripts use, beyond the support root's.
    const EXTRA_APPLETS: &[&str] = &[
        "mount", "umount", "mknod", "unshare", "chroot", "nsenter", "sysctl", "cut", "stat", "ln",
        "rm", "readlink", "awk",
    ];

    fn hostile_root(t: &TestSandbox) -> PathBuf {
        for a in EXTRA_APPLETS {
            let link = t.rootfs.join("bin").join(a);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("busybox", link).unwrap();
            }
        }
        t.rootfs.clone()
    }

    /// A root worker (no `user`) running `script` with busybox sh, isolated network.
    fn root_sh(t: &TestSandbox, name: &str, script: &str, out: &Path) -> ContainerSpec {
        let mut spec = ContainerSpec::new(name, RootFs::Dir(hostile_root(t)), "sh");
        spec.args = vec!["-c".into(), script.into()];
        spec.network = NetworkMode::Isolated;
        spec.output = Output::File(out.to_path_buf());
        spec
    }

    async fn run_to_end(t: &TestSandbox, spec: ContainerSpec, out: &Path) -> String {
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        let exit = w.wait().await.unwrap();
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(out).unwrap_or_default();
        assert_eq!(exit, ContainerExit::Code(0), "{text}");
        text
    }

    /// Puts a host sysctl back to its value when the test ends, even if it fails (on a
    /// sandbox without /proc hardening the worker really changes it).
    struct RestoreSysctl {
        path: &'static str,
        value: String,
    }

    impl RestoreSysctl {
        fn save(path: &'static str) -> Self {
            RestoreSysctl {
                path,
                value: std::fs::read_to_string(path).unwrap(),
            }
        }
    }

    impl Drop for RestoreSysctl {
        fn drop(&mut self) {
            if std::fs::read_to_string(self.path).ok().as_ref() != Some(&self.value) {
                let _ = std::fs::write(self.path, &self.value);
            }
        }
    }

    /// The lines `NAME=VALUE` of the worker's report.
    fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
    }

    /// Issue 7 item 1: a root worker with no capabilities writes host-global sysctls unless
    /// /proc/sys is read-only; masked files leak kernel state.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_root_worker_cannot_write_host_sysctls_or_read_masked_proc_files() {
        let t = TestSandbox::new(70);
        let ratelimit = RestoreSysctl::save("/proc/sys/kernel/printk_ratelimit");
        let _core = RestoreSysctl::save("/proc/sys/kernel/core_pattern");
        let other = if ratelimit.value.trim() == "7" { 8 } else { 7 };
        let out = t.dir.path().join("out.txt");
        let script = format!(
            "try() {{ name=$1; shift; if ( eval \"$@\" ) 2>/dev/null; then echo $name=ok; else echo $name=denied; fi; }}
             try printk 'echo {other} > /proc/sys/kernel/printk_ratelimit'
             try core_pattern 'cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern'
             try sysctl_tool 'sysctl -w kernel.printk_ratelimit={other}'
             try remount_proc_sys 'mount -o remount,rw /proc/sys'
             try umount_proc_sys 'umount /proc/sys'
             for f in kcore keys timer_list sched_debug latency_stats timer_stats interrupts; do
               test -e /proc/$f && echo read_$f=$(cat /proc/$f 2>/dev/null | wc -c)
             done
             for d in acpi scsi asound; do
               test -e /proc/$d && echo list_$d=$(ls -A /proc/$d 2>/dev/null | wc -l)
             done
             for p in sys sysrq-trigger irq bus fs; do
               test -e /proc/$p && echo ro_$p=$(awk -v p=/proc/$p '$5 == p {{ split($6, o, \",\"); print o[1] }}' /proc/self/mountinfo | tail -n 1)
             done
             exit 0"
        );
        let spec = root_sh(&t, "procsys", &script, &out);
        let text = run_to_end(&t, spec, &out).await;
        eprintln!("{text}");
        assert_eq!(
            std::fs::read_to_string(ratelimit.path).unwrap(),
            ratelimit.value,
            "the host's sysctl is unchanged"
        );
        for attempt in [
            "printk",
            "core_pattern",
            "sysctl_tool",
            "remount_proc_sys",
            "umount_proc_sys",
        ] {
            assert_eq!(field(&text, attempt), Some("denied"), "{attempt}: {text}");
        }
        let mut seen = 0;
        for l in text.lines() {
            if let Some((name, n)) = l.split_once('=') {
                if name.starts_with("read_") || name.starts_with("list_") {
                    seen += 1;
                    assert_eq!(n, "0", "{name} must be masked: {text}");
                }
                if name.starts_with("ro_") {
                    seen += 1;
                    assert_eq!(n, "ro", "{name} must be a read-only mount: {text}");
                }
            }
        }
        // /proc/keys, /proc/timer_list and /proc/sys exist on every kernel we run on.
        assert!(
            field(&text, "read_keys").is_some() && field(&text, "ro_sys").is_some(),
            "{text}"
        );
        assert!(seen >= 3, "{text}");
        t.assert_nothing_left();
    }

    /// A host /sys bind-mounted into a worker is always read-only (sysfs checks file modes
    /// only, so a root worker without capabilities could write it); the host's /proc is
    /// refused outright.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_host_sys_mount_is_read_only_and_host_proc_is_refused() {
        let t = TestSandbox::new(75);
        let out = t.dir.path().join("out.txt");
        let script = "awk '$5 == \"/sys\" { split($6, o, \",\"); print \"sys_mount=\" o[1] }' /proc/self/mountinfo; \
             touch /sys/poold-probe 2>&1 | grep -q 'Read-only' && echo sys_write=erofs || echo sys_write=other";
        let mut spec = root_sh(&t, "sys", script, &out);
        spec.mounts = vec![BindMount {
            source: "/sys".into(),
            target: "/sys".into(),
            read_only: false,
        }];
        let text = run_to_end(&t, spec, &out).await;
        assert_eq!(field(&text, "sys_mount"), Some("ro"), "{text}");
        assert_eq!(field(&text, "sys_write"), Some("erofs"), "{text}");
        let mut spec = root_sh(&t, "proc", "true", &out);
        spec.mounts = vec![BindMount {
            source: "/proc".into(),
            target: "/hostproc".into(),
            read_only: true,
        }];
        let e = t.sandbox.spawn(spec).await.unwrap_err().to_string();
        assert!(e.contains("mounts.source") && e.contains("/proc"), "{e}");
        t.assert_nothing_left();
    }

    /// Issue 7 item 13: an image whose etc/passwd is an absolute symlink to a host file must
    /// not make a host-only user valid; the image's own file behind the same path is used.
    #[tokio::test(flavor = "multi_thread")]
    async fn user_lookup_follows_image_symlinks_inside_the_image_only() {
        let t = TestSandbox::new(71);
        let root = hostile_root(&t);
        let host_passwd = t.dir.path().join("host-passwd");
        std::fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&host_passwd, root.join("etc/passwd")).unwrap();
        let out = t.dir.path().join("out.txt");
        let mut spec = root_sh(&t, "hostuser", "id -u", &out);
        spec.user = Some("hostonly".into());
        let err = t.sandbox.spawn(spec).await.map(|mut w| {
            // Old behaviour: the host's user was found and the worker ran as it.
            futures::executor::block_on(w.wait()).ok()
        });
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let e = err.expect_err(&format!("the host's passwd was read: worker said {text:?}"));
        assert!(e.to_string().contains("unknown user \"hostonly\""), "{e}");
        // The same absolute path inside the image holds the image's users.
        let inner = root.join(host_passwd.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::fs::write(&inner, "imageonly:x:77:78::/:/bin/sh\n").unwrap();
        let mut spec = root_sh(&t, "imageuser", "echo uid=$(id -u) gid=$(id -g)", &out);
        spec.user = Some("imageonly".into());
        let text = run_to_end(&t, spec, &out).await;
        assert!(text.contains("uid=77 gid=78"), "{text}");
        t.assert_nothing_left();
    }

    /// Runs this test binary's [`hostile_probe`] inside a worker on the host root (its
    /// libraries are the host's), and returns what it printed.
    async fn run_probe(t: &TestSandbox, mut spec_change: impl FnMut(&mut ContainerSpec)) -> String {
        let out = t
            .dir
            .path()
            .join(format!("probe-{}.txt", sandbox_support_unique()));
        let exe = std::env::current_exe().unwrap();
        let mut spec = ContainerSpec::new("probe", RootFs::Host, "/probe");
        spec.args = [
            "--exact",
            "sandbox_hardening::hostile_probe",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .map(String::from)
        .to_vec();
        spec.env = vec![("POOLD_HOSTILE_PROBE".into(), "1".into())];
        spec.mounts = vec![BindMount {
            source: exe,
            target: "/probe".into(),
            read_only: true,
        }];
        spec.network = NetworkMode::Isolated;
        spec.output = Output::File(out.clone());
        spec_change(&mut spec);
        let text = run_to_end(t, spec, &out).await;
        text.lines()
            .filter_map(|l| l.strip_prefix("probe: "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn sandbox_support_unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// The syscall-level attempts a hostile worker makes, one line each: `NAME=ok` or
    /// `NAME=denied(ERRNO)`. Not a test of its own: it does nothing unless run inside a
    /// worker by [`run_probe`].
    #[test]
    fn hostile_probe() {
        if std::env::var_os("POOLD_HOSTILE_PROBE").is_none() {
            return;
        }
        probe::run();
    }

    /// Issue 7 item 15: workers get Docker's default seccomp filter; `unconfined` turns it
    /// off and `seccomp_allow` adds syscalls.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_default_seccomp_filter_denies_what_dockers_denies() {
        let t = TestSandbox::new(72);
        let confined = run_probe(&t, |_| {}).await;
        eprintln!("default:\n{confined}");
        assert_eq!(field(&confined, "seccomp_mode"), Some("2"), "{confined}");
        for tool in ["unshare_user_tool", "unshare_mount", "nsenter_init"] {
            assert!(
                field(&confined, tool).is_some_and(|v| v.starts_with("denied")),
                "{tool}: {confined}"
            );
        }
        for attempt in [
            "unshare_user",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "open_by_handle_at",
            "ptrace_child",
            "vsock_socket",
            "personality_odd",
        ] {
            assert_eq!(
                field(&confined, attempt),
                Some("denied(EPERM)"),
                "{attempt}: {confined}"
            );
        }
        // Threads still start (glibc falls back from clone3, refused with ENOSYS, to clone).
        assert_eq!(field(&confined, "thread"), Some("ok"), "{confined}");
        assert_eq!(
            field(&confined, "clone3"),
            Some("denied(ENOSYS)"),
            "{confined}"
        );

        // The probe can tell: without the filter the same attempts get through.
        let open = run_probe(&t, |s| s.seccomp = SeccompMode::Unconfined).await;
        eprintln!("unconfined:\n{open}");
        assert_eq!(field(&open, "seccomp_mode"), Some("0"), "{open}");
        for attempt in [
            "unshare_user_tool",
            "keyctl",
            "ptrace_child",
            "personality_odd",
        ] {
            assert_eq!(field(&open, attempt), Some("ok"), "{attempt}: {open}");
        }

        let allowed = run_probe(&t, |s| s.seccomp_allow = vec!["keyctl".into()]).await;
        assert_eq!(field(&allowed, "seccomp_mode"), Some("2"), "{allowed}");
        assert_eq!(field(&allowed, "keyctl"), Some("ok"), "{allowed}");
        assert_eq!(
            field(&allowed, "add_key"),
            Some("denied(EPERM)"),
            "{allowed}"
        );
        t.assert_nothing_left();
    }

    /// The helper's grandchild: helper -> init -> program.
    fn program_pid(helper: u32) -> Option<u32> {
        let children = |pid: u32| -> Vec<u32> {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        let init = *children(helper).first()?;
        children(init).first().copied()
    }

    /// Issue 7 item 16: with `user_namespace`, the worker's root is an unprivileged host uid:
    /// it cannot write what a host user could not, the image still looks root-owned inside,
    /// and the worker still serves (on port 80, in its own network namespace).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_user_namespace_worker_is_root_inside_and_nobody_outside() {
        user_namespace_worker(TestSandbox::new(73), 300_000).await;
    }

    /// The same with the writable layer on disk (its directories made by poold as root).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_user_namespace_worker_on_a_disk_layer_is_root_inside() {
        user_namespace_worker(TestSandbox::with_layer(76, None), 365_536).await;
    }

    async fn user_namespace_worker(t: TestSandbox, base: u32) {
        let shared = t.dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("owned-by-root"), "host\n").unwrap();
        let out = t.dir.path().join("out.txt");
        let script = "echo uid=$(id -u) gid=$(id -g); \
             echo image_owner=$(stat -c %u:%g /bin/busybox); \
             touch /data/new 2>/dev/null && echo data_create=ok || echo data_create=denied; \
             echo x >> /data/owned-by-root 2>/dev/null && echo data_append=ok || echo data_append=denied; \
             echo 9 > /proc/sys/kernel/printk_ratelimit 2>/dev/null && echo sysctl=ok || echo sysctl=denied; \
             touch /created-in-root && echo root_write=ok || echo root_write=denied; \
             echo ready; exec httpd -f -p 80 -h /www";
        let mut spec = root_sh(&t, "userns", script, &out);
        spec.network = NetworkMode::Bridged;
        spec.user_namespace = Some(IdMap {
            host_first: base,
            count: 65536,
        });
        spec.mounts = vec![BindMount {
            source: shared.clone(),
            target: "/data".into(),
            read_only: false,
        }];
        let w = t.sandbox.spawn(spec).await.unwrap();
        let text = output_containing(&out, "ready").await;
        let program = eventually("the program runs", || program_pid(w.pid())).await;
        let status = std::fs::read_to_string(format!("/proc/{program}/status")).unwrap();
        let host_ids = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let b = base.to_string();
        let all_base = Some(format!("{b} {b} {b} {b}"));
        let answer = {
            let addr = w.address().unwrap();
            eventually("httpd answers on port 80", || {
                let mut s = std::net::TcpStream::connect_timeout(
                    &(addr, 80).into(),
                    std::time::Duration::from_secs(2),
                )
                .ok()?;
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
                let mut r = String::new();
                s.read_to_string(&mut r).ok()?;
                Some(r)
            })
            .await
        };
        w.destroy().await.unwrap();
        eprintln!("{text}");
        assert_eq!(
            host_ids("Uid:"),
            all_base,
            "host uid of the worker's root: {status}"
        );
        assert_eq!(host_ids("Gid:"), all_base, "{status}");
        assert!(text.contains("uid=0 gid=0"), "root inside: {text}");
        assert_eq!(field(&text, "image_owner"), Some("0:0"), "{text}");
        for attempt in ["data_create", "data_append", "sysctl"] {
            assert_eq!(field(&text, attempt), Some("denied"), "{attempt}: {text}");
        }
        assert_eq!(field(&text, "root_write"), Some("ok"), "{text}");
        assert_eq!(
            std::fs::read_to_string(shared.join("owned-by-root")).unwrap(),
            "host\n"
        );
        assert!(!shared.join("new").exists());
        assert!(answer.contains("hello from the worker"), "{answer}");
        // Where the filesystem cannot idmap (tmpfs before Linux 6.3: the VM), the image was
        // copied once with shifted owners.
        let copies: Vec<_> = std::fs::read_dir(&t.config().image_cache)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        eprintln!("shifted copies (none means an idmapped mount): {copies:?}");
        for copy in copies {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(copy.join("bin/busybox")).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (base, base), "{}", copy.display());
        }
        t.assert_nothing_left();
    }

    /// Every escape attempt of a hostile image, made by a worker with the defaults a quick
    /// start uses (root, no `user`, the default seccomp filter, no user namespace): one
    /// line per attempt, each must fail. Part one is the image's busybox script, part two
    /// the syscall probe (this test binary) for what busybox cannot do (keyctl, ptrace, bpf...).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_hostile_worker_escapes_nothing() {
        let t = TestSandbox::new(74);
        let ratelimit = RestoreSysctl::save("/proc/sys/kernel/printk_ratelimit");
        let _core = RestoreSysctl::save("/proc/sys/kernel/core_pattern");
        let other = if ratelimit.value.trim() == "7" { 8 } else { 7 };
        let out = t.dir.path().join("hostile.txt");
        let script = format!(
            r#"try() {{ name=$1; shift; if ( eval "$@" ) >/dev/null 2>&1; then echo "$name=ESCAPED"; else echo "$name=denied"; fi; }}
            empty() {{ n=$(cat "$2" 2>/dev/null | head -c 64 | wc -c); if [ "$n" = 0 ]; then echo "$1=denied"; else echo "$1=ESCAPED"; fi; }}
            try sysctl_printk 'echo {other} > /proc/sys/kernel/printk_ratelimit'
            try sysctl_core_pattern 'echo "|/bin/sh -c id" > /proc/sys/kernel/core_pattern'
            try sysctl_tool 'sysctl -w kernel.printk_ratelimit={other}'
            try remount_proc_rw 'mount -o remount,rw /proc/sys'
            try umount_proc_mask 'umount /proc/keys'
            empty read_kcore /proc/kcore
            empty read_keys /proc/keys
            empty read_timer_list /proc/timer_list
            empty read_sched_debug /proc/sched_debug
            empty read_interrupts /proc/interrupts
            try mount_tmpfs 'mount -t tmpfs x /tmp'
            try mount_bind_root 'mount --bind / /tmp'
            try remount_root 'mount -o remount,rw /'
            try mount_proc_again 'mkdir -p /tmp/p && mount -t proc proc /tmp/p'
            try mknod_block 'mknod /tmp/sda b 8 0'
            try mknod_mem 'mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem'
            try unshare_user 'unshare -U true'
            try unshare_user_map_root 'unshare -U -r true'
            try unshare_mount 'unshare -m true'
            try unshare_net 'unshare -n true'
            try nsenter_init 'nsenter -t 1 -m -u -n true'
            try chroot_escape 'mkdir -p /tmp/jail && chroot /tmp/jail /bin/true'
            try proc1_root 'ls /proc/1/root/'
            try sys_write 'echo 1 > /sys/kernel/mm/ksm/run'
            try sys_mount 'mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s'
            try cgroup_mount 'mkdir -p /tmp/c && mount -t cgroup2 none /tmp/c'
            try dev_disk 'head -c 1 /dev/sda || head -c 1 /dev/vda'
            try hostname_change 'hostname evil'
            exit 0"#
        );
        let spec = root_sh(&t, "hostile", &script, &out);
        let shell = run_to_end(&t, spec, &out).await;
        let probe = run_probe(&t, |_| {}).await;
        // The same image again, its root in a user namespace.
        let userns_out = t.dir.path().join("hostile-userns.txt");
        let mut spec = root_sh(&t, "hostile-userns", &script, &userns_out);
        spec.user_namespace = Some(IdMap {
            host_first: 400_000,
            count: 65536,
        });
        let userns_shell = run_to_end(&t, spec, &userns_out).await;
        eprintln!(
            "hostile image:\n{shell}\nsyscall probe:\n{probe}\nin a user namespace:\n{userns_shell}"
        );
        assert_eq!(
            shell.lines().count(),
            userns_shell.lines().count(),
            "{userns_shell}"
        );
        assert_eq!(
            std::fs::read_to_string(ratelimit.path).unwrap(),
            ratelimit.value,
            "the host's sysctl is unchanged"
        );
        let attempts: Vec<(&str, &str)> = shell
            .lines()
            .chain(probe.lines())
            .chain(userns_shell.lines())
            .filter_map(|l| l.split_once('='))
            .collect();
        let escaped: Vec<_> = attempts
            .iter()
            .filter(|(name, v)| {
                *name != "seccomp_mode" && *name != "thread" && !v.starts_with("denied")
            })
            .collect();
        assert!(
            escaped.is_empty(),
            "escapes: {escaped:?}\n{shell}\n{probe}\n{userns_shell}"
        );
        // Every attempt reported (a crashed script or probe must not pass for "no escape").
        for name in [
            "sysctl_printk",
            "sysctl_core_pattern",
            "read_keys",
            "mount_tmpfs",
            "mknod_mem",
            "unshare_user",
            "unshare_user_map_root",
            "chroot_escape",
            "proc1_root",
            "sys_write",
            "hostname_change",
        ] {
            assert!(field(&shell, name).is_some(), "{name} missing: {shell}");
        }
        for name in [
            "keyctl",
            "add_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "open_by_handle_at",
            "ptrace_child",
            "ptrace_init",
            "unshare_user",
            "mount_tmpfs",
            "mknod_mem",
            "chroot",
            "write_sysctl",
        ] {
            assert!(field(&probe, name).is_some(), "{name} missing: {probe}");
        }
        assert_eq!(field(&probe, "seccomp_mode"), Some("2"), "{probe}");
        t.assert_nothing_left();
    }
}

/// The hostile worker's syscall attempts (runs inside a worker only, see `hostile_probe`).
mod probe {
    use nix::errno::Errno;

    fn report(name: &str, result: Result<(), Errno>) {
        match result {
            Ok(()) => println!("probe: {name}=ok"),
            Err(e) => println!("probe: {name}=denied({e:?})"),
        }
    }

    /// A raw syscall with up to five integer or pointer arguments.
    fn raw(nr: libc::c_long, args: [usize; 5]) -> Result<(), Errno> {
        // SAFETY: every call below passes either plain integers, null pointers (the kernel
        // checks them and fails with EFAULT) or pointers to NUL-terminated strings that
        // outlive the call; none of these syscalls writes to memory it was given, so no Rust
        // value can be changed behind the compiler's back.
        let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
        Errno::result(rc).map(drop)
    }

    fn ptrace_attach(pid: i32) -> Result<(), Errno> {
        raw(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as usize, pid as usize, 0, 0, 0],
        )
    }

    fn shell(args: &[&str]) -> Result<(), Errno> {
        let status = std::process::Command::new("/bin/busybox")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        if status.success() {
            Ok(())
        } else {
            // A tool's failure carries no errno: report it as EPERM's absence.
            Err(Errno::UnknownErrno)
        }
    }

    pub fn run() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(str::trim)
            .unwrap_or("?");
        println!("probe: seccomp_mode={mode}");
        report("unshare_user_tool", shell(&["unshare", "-U", "true"]));
        report(
            "unshare_user",
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER),
        );
        report("unshare_mount", shell(&["unshare", "-m", "true"]));
        report("nsenter_init", shell(&["nsenter", "-t", "1", "-m", "true"]));
        // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), creating it.
        report(
            "keyctl",
            raw(libc::SYS_keyctl, [0, -3_isize as usize, 1, 0, 0]),
        );
        let (user, desc, data) = (c"user", c"poold-probe", c"x");
        report(
            "add_key",
            raw(
                libc::SYS_add_key,
                [
                    user.as_ptr() as usize,
                    desc.as_ptr() as usize,
                    data.as_ptr() as usize,
                    1,
                    -2_isize as usize,
                ],
            ),
        );
        report(
            "request_key",
            raw(
                libc::SYS_request_key,
                [user.as_ptr() as usize, desc.as_ptr() as usize, 0, 0, 0],
            )
            .map_err(|e| {
                if e == Errno::ENOKEY {
                    Errno::UnknownErrno
                } else {
                    e
                }
            }),
        );
        report("bpf", raw(libc::SYS_bpf, [0, 0, 0, 0, 0]));
        report(
            "perf_event_open",
            raw(libc::SYS_perf_event_open, [0, 0, usize::MAX, usize::MAX, 0]),
        );
        report("userfaultfd", raw(libc::SYS_userfaultfd, [0, 0, 0, 0, 0]));
        report("kexec_load", raw(libc::SYS_kexec_load, [0, 0, 0, 0, 0]));
        report(
            "open_by_handle_at",
            raw(
                libc::SYS_open_by_handle_at,
                [libc::AT_FDCWD as usize, 0, 0, 0, 0],
            ),
        );
        // 0x0400000 = READ_IMPLIES_EXEC: not one of the personalities Docker allows.
        report(
            "personality_odd",
            raw(libc::SYS_personality, [0x040_0000, 0, 0, 0, 0]),
        );
        report("clone3", raw(libc::SYS_clone3, [0, 0, 0, 0, 0]));
        report(
            "vsock_socket",
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Vsock,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            )
            .map(drop),
        );
        report(
            "thread",
            std::thread::spawn(|| ())
                .join()
                .map_err(|_| Errno::UnknownErrno),
        );
        // ptrace of our own child (allowed to any same-uid parent without seccomp) and of
        // the worker's init.
        let child = std::process::Command::new("/bin/busybox")
            .args(["sleep", "60"])
            .spawn();
        match child {
            Ok(mut c) => {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                report("ptrace_child", ptrace_attach(pid.as_raw()));
                let _ = c.kill();
                let _ = c.wait();
            }
            Err(_) => println!("probe: ptrace_child=no-child"),
        }
        report("ptrace_init", ptrace_attach(1));
        report(
            "mount_tmpfs",
            nix::mount::mount(
                Some("tmpfs"),
                "/tmp",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
        );
        report(
            "umount_proc_sys",
            nix::mount::umount2("/proc/sys", nix::mount::MntFlags::MNT_DETACH),
        );
        report(
            "mknod_mem",
            nix::sys::stat::mknod(
                "/dev/shm/mem",
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, 1),
            ),
        );
        report("chroot", nix::unistd::chroot("/tmp"));
        report(
            "write_sysctl",
            std::fs::write("/proc/sys/kernel/printk_ratelimit", "9\n")
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))),
        );
    }
}
