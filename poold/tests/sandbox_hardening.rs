//! The worker sandbox against a hostile worker (root needed): /proc hardening, user lookup
//! inside the image, seccomp, user namespaces. Each test has its own tag (subnet
//! 10.213.<tag>.0/24, tags 70..=79).

mod sandbox_support;

use std::path::{Path, PathBuf};

use poold::sandbox::{ExitStatus, NetworkMode, Output, RootFs, WorkerSpec};
use sandbox_support::TestSandbox;

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
    fn root_sh(t: &TestSandbox, name: &str, script: &str, out: &Path) -> WorkerSpec {
        let mut spec = WorkerSpec::new(name, RootFs::Dir(hostile_root(t)), "sh");
        spec.args = vec!["-c".into(), script.into()];
        spec.network = NetworkMode::Isolated;
        spec.output = Output::File(out.to_path_buf());
        spec
    }

    async fn run_to_end(t: &TestSandbox, spec: WorkerSpec, out: &Path) -> String {
        let mut w = t.sandbox.spawn(spec).await.unwrap();
        let exit = w.wait().await.unwrap();
        w.destroy().await.unwrap();
        let text = std::fs::read_to_string(out).unwrap_or_default();
        assert_eq!(exit.status, ExitStatus::Code(0), "{text}");
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
}
