//! Shared helpers of the sandbox tests: a busybox root filesystem, a per-test sandbox with
//! unique names (bridge, subnet 10.213.<tag>.0/24, cgroup parent, link prefix, state dir)
//! and a Drop guard that removes everything even when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use poold::sandbox::{BridgeConfig, Sandbox, SandboxConfig};

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "grep", "id", "sleep", "hostname", "head", "tr", "dd", "test",
    "httpd", "nc", "seq", "true", "false", "touch", "sed", "ps", "wc", "mkdir",
];

/// A minimal busybox root in `dir`: /bin/busybox + applet symlinks, /etc/passwd with
/// `nobody` (65534) and `www` (33), /www/index.html.
pub fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "www", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwww:x:33:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(root.join("www/index.html"), "hello from the worker\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    root
}

/// A sandbox of its own for one test, torn down (workers, cgroups, links, namespaces,
/// bridge, directories) when dropped.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
}

impl TestSandbox {
    /// `tag` must be unique per test (it picks the subnet 10.213.<tag>.0/24).
    pub fn new(tag: u8) -> Self {
        Self::with_layer(tag, Some(64))
    }

    /// Its subnet cut into slices of `/slice_prefix`, one bridge each (a /30 slice holds
    /// one container: each container gets a bridge of its own).
    pub fn with_slice_prefix(tag: u8, slice_prefix: u8) -> Self {
        let mut t = Self::new(tag);
        let mut config = t.config().clone();
        config.bridge.as_mut().unwrap().slice_prefix = slice_prefix;
        t.sandbox = Sandbox::new(config).unwrap();
        t
    }

    /// `writable_tmpfs_mib` None puts the writable layers on disk.
    pub fn with_layer(tag: u8, writable_tmpfs_mib: Option<u64>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("poold-sbtest")
            .tempdir()
            .unwrap();
        let rootfs = busybox_root(dir.path());
        let pid = std::process::id() % 100_000;
        let config = SandboxConfig {
            state_dir: dir.path().join("state"),
            image_cache: dir.path().join("images"),
            image_max_bytes: poold::sandbox::DEFAULT_IMAGE_MAX_BYTES,
            cgroup_parent: format!("poold-test-{pid}-{tag}"),
            link_prefix: format!("pdt{tag:02x}"),
            helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_poold")),
            bridge: Some(BridgeConfig {
                name: format!("pdbr{pid}x{tag}"),
                subnet: format!("10.213.{tag}.0/24").parse().unwrap(),
                slice_prefix: poold::sandbox::DEFAULT_SLICE_PREFIX,
                quarantine: Duration::from_secs(150),
                allow_host_ports: Vec::new(),
            }),
            writable_tmpfs_mib,
        };
        TestSandbox {
            sandbox: Sandbox::new(config).unwrap(),
            dir,
            rootfs,
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        self.sandbox.config()
    }

    /// Asserts that no object of this sandbox is left.
    pub fn assert_nothing_left(&self) {
        let c = self.config();
        for ctl in ["pids", "memory", "cpu", "freezer", "unified", ""] {
            let dir = Path::new("/sys/fs/cgroup").join(ctl).join(&c.cgroup_parent);
            let children: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                children.is_empty(),
                "cgroups left in {}: {children:?}",
                dir.display()
            );
        }
        let links: Vec<_> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&c.link_prefix))
            .collect();
        assert!(links.is_empty(), "links left: {links:?}");
        for sub in ["netns", "workers", "scratch"] {
            let d = c.state_dir.join(sub);
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "left in {}: {left:?}", d.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let state = c.state_dir.to_string_lossy().into_owned();
        let ours: Vec<_> = mounts.lines().filter(|l| l.contains(&state)).collect();
        assert!(ours.is_empty(), "mounts left: {ours:?}");
    }
}

/// Directories named `parent` in any cgroup hierarchy (v1: under each controller's mount;
/// v2: at the root).
pub fn cgroup_dirs_named(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    std::iter::once(root.to_path_buf())
        .chain(
            std::fs::read_dir(root)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_else(|_| Vec::new()),
        )
        .map(|hierarchy| hierarchy.join(parent))
        .filter(|dir| dir.is_dir())
        .collect()
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Err(e) = self.sandbox.cleanup_orphans_blocking() {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = self.sandbox.remove_bridge_blocking() {
            eprintln!("removing bridge: {e}");
        }
        for ctl in ["pids", "memory", "cpu", "cpuacct", "freezer", ""] {
            let _ = std::fs::remove_dir(
                Path::new("/sys/fs/cgroup")
                    .join(ctl)
                    .join(&self.config().cgroup_parent),
            );
        }
    }
}

/// Polls `f` until it returns Some (readiness, not timing: the bound only stops a hang).
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until the file at `path` (a container's output) contains `needle`; returns its text.
pub async fn output_containing(path: &Path, needle: &str) -> String {
    eventually(&format!("{} contains {needle:?}", path.display()), || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.contains(needle))
    })
    .await
}
