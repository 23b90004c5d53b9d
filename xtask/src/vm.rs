//! `vm-test` and `vm-run`: one image builder and one runner; a file in the image
//! (/vmtest/mode) tells the init what to run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::artifacts::{self, Artifacts};
use crate::image::{stripped_copy, Image};
use crate::kernel::{self, Kernel};
use crate::prereq;
use crate::qemu::{self, Report};
use crate::util::{build_dir, output, workspace_root};

#[derive(Debug, Clone, clap::Args)]
pub struct VmOptions {
    /// Give up (and kill qemu) after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Use KVM instead of TCG (nested KVM hangs on some hosts; TCG always works).
    #[arg(long)]
    pub kvm: bool,
    /// Build and run release binaries (for benchmarks).
    #[arg(long)]
    pub release: bool,
}

/// What the VM's init runs.
enum Payload<'a> {
    Tests { args: &'a [String] },
    Script { path: &'a Path, args: &'a [String] },
}

pub fn vm_test(opts: &VmOptions, test_args: &[String]) -> Result<()> {
    let started = Instant::now();
    let report = boot(opts, Payload::Tests { args: test_args })?;
    let failed_vm = vm_failure(&report);
    if !report.failures.is_empty() {
        eprintln!("\nvm-test: failed tests:");
        for failure in &report.failures {
            eprintln!("    {failure}");
        }
    }
    summary(&report, started);
    if let Some(problem) = failed_vm {
        bail!("vm-test: {problem}");
    }
    match report.tests {
        None => bail!("vm-test: the VM printed no `VMTEST RESULT` line"),
        Some((_, failed)) if failed > 0 => bail!("vm-test: {failed} test(s) failed"),
        Some((0, _)) if test_args.is_empty() => bail!("vm-test: no test ran"),
        Some((0, _)) => bail!("vm-test: no test matched {test_args:?}"),
        Some((passed, _)) => eprintln!("vm-test: all {passed} tests passed"),
    }
    Ok(())
}

pub fn vm_run(opts: &VmOptions, script: &Path, args: &[String]) -> Result<()> {
    let started = Instant::now();
    let script = fs::canonicalize(script).with_context(|| format!("{}", script.display()))?;
    if !script.starts_with(workspace_root()) {
        bail!("{}: the script must be inside the repo", script.display());
    }
    let report = boot(
        opts,
        Payload::Script {
            path: &script,
            args,
        },
    )?;
    summary(&report, started);
    if let Some(problem) = vm_failure(&report) {
        bail!("vm-run: {problem}");
    }
    match report.run_exit {
        None => bail!("vm-run: the VM printed no `VMRUN RESULT` line"),
        Some(0) => Ok(()),
        Some(code) => bail!("vm-run: {} exited with {code}", script.display()),
    }
}

fn vm_failure(report: &Report) -> Option<String> {
    if report.timed_out {
        return Some("timed out; qemu was killed".into());
    }
    if !report.errors.is_empty() {
        return Some(format!(
            "setup inside the VM failed: {}",
            report.errors.join("; ")
        ));
    }
    match report.qemu_status {
        Some(status) if !status.success() => Some(format!("qemu exited with {status}")),
        _ => None,
    }
}

fn summary(report: &Report, started: Instant) {
    let boot = report.boot_time.map_or("no init output".into(), |t| {
        format!("{:.1} s", t.as_secs_f64())
    });
    eprintln!(
        "xtask: VM boot to init: {boot}; total {:.1} s; console log: {}",
        started.elapsed().as_secs_f64(),
        build_dir().join("console.log").display()
    );
}

fn boot(opts: &VmOptions, payload: Payload<'_>) -> Result<Report> {
    let root = workspace_root();
    let build = build_dir();
    fs::create_dir_all(&build)?;
    let host_tools = ensure_prerequisites()?;
    let kernel = kernel::fetch(&build)?;
    let with_tests = matches!(payload, Payload::Tests { .. });
    let artifacts = artifacts::build(&root, with_tests, opts.release)?;
    if with_tests && artifacts.tests.is_empty() {
        bail!("cargo built no test binaries");
    }

    let mut image = Image::new();
    base_system(&mut image, &root)?;
    for tool in &host_tools {
        tool.add_to(&mut image)?;
    }
    repo_files(&mut image, &root)?;
    kernel_modules(
        &mut image,
        &kernel,
        &root.join("tests/vm/modules.txt"),
        &build,
    )?;
    workspace_binaries(&mut image, &artifacts, &build)?;
    match payload {
        Payload::Tests { args } => {
            // The real-image tests' Debian images, at the path they have on the host.
            for link in crate::test_images::ensure()? {
                let file = fs::canonicalize(&link)?;
                image.file_from(&link, &file)?;
            }
            image.bytes("/vmtest/mode", "test\n", 0o644)?;
            let list: String = artifacts
                .tests
                .iter()
                .map(|t| format!("{}|{}\n", t.package_dir.display(), t.executable.display()))
                .collect();
            image.bytes("/vmtest/tests", list, 0o644)?;
            image.bytes("/vmtest/args", lines(args), 0o644)?;
        }
        Payload::Script { path, args } => {
            image.bytes("/vmtest/mode", "run\n", 0o644)?;
            image.bytes("/vmtest/script", format!("{}\n", path.display()), 0o644)?;
            image.bytes("/vmtest/args", lines(args), 0o644)?;
        }
    }
    image.bytes("/vmtest/workdir", format!("{}\n", root.display()), 0o644)?;
    let initramfs = build.join("initramfs.cpio");
    let size = image.write(&initramfs)?;
    eprintln!("xtask: wrote {} ({} MiB)", initramfs.display(), size >> 20);

    qemu::boot(&qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initramfs: &initramfs,
        kvm: opts.kvm,
        timeout: Duration::from_secs(opts.timeout),
        console_log: &build.join("console.log"),
    })
}

/// Install the harness's packages and those of tests/vm/host-tools.txt where missing.
fn ensure_prerequisites() -> Result<Vec<HostTool>> {
    let host_tools = HostTool::read_list(&workspace_root().join("tests/vm/host-tools.txt"))?;
    prereq::ensure_packages(
        prereq::VM_PACKAGES
            .iter()
            .copied()
            .chain(host_tools.iter().map(|t| t.package.as_str())),
    )?;
    Ok(host_tools)
}

/// For `cargo xtask test`: host tests use the same tools as the VM.
pub fn ensure_host_prerequisites() -> Result<()> {
    ensure_prerequisites().map(drop)
}

fn lines(items: &[String]) -> String {
    items.iter().map(|a| format!("{a}\n")).collect()
}

/// busybox with its applets in /bin, the init, device nodes and empty mount points.
fn base_system(image: &mut Image, root: &Path) -> Result<()> {
    for dir in [
        "/bin", "/sbin", "/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root",
    ] {
        image.dir(dir)?;
    }
    image.char_dev("/dev/console", 0o600, 5, 1)?;
    image.char_dev("/dev/null", 0o666, 1, 3)?;
    image.file_from(Path::new("/bin/busybox"), Path::new("/bin/busybox"))?;
    let applets = output(Command::new("/bin/busybox").arg("--list"))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        image.symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    image.file_from(Path::new("/init"), &root.join("tests/vm/init.sh"))?;
    Ok(())
}

/// One line of tests/vm/host-tools.txt: `PATH PACKAGE`.
#[derive(Debug)]
struct HostTool {
    path: PathBuf,
    package: String,
    origin: String,
}

impl HostTool {
    fn read_list(file: &Path) -> Result<Vec<HostTool>> {
        let text = fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        let mut tools = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let origin = format!("{}:{}", file.display(), index + 1);
            let mut words = line.split_whitespace();
            let (Some(path), Some(package), None) = (words.next(), words.next(), words.next())
            else {
                bail!("{origin}: expected `ABSOLUTE-PATH DEBIAN-PACKAGE`, found `{line}`");
            };
            if !path.starts_with('/') {
                bail!("{origin}: `{path}` is not an absolute path");
            }
            tools.push(HostTool {
                path: path.into(),
                package: package.into(),
                origin,
            });
        }
        Ok(tools)
    }

    fn add_to(&self, image: &mut Image) -> Result<()> {
        if !self.path.exists() {
            bail!(
                "{}: {} is missing on the host (Debian package `{}`: apt-get install {})",
                self.origin,
                self.path.display(),
                self.package,
                self.package
            );
        }
        image.host_file(&self.path)?;
        image.libraries_of(&self.path)
    }
}

/// The repo's files at their host paths (tests may read fixtures relative to the package).
fn repo_files(image: &mut Image, root: &Path) -> Result<()> {
    let files = output(
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(root),
    )?;
    for rel in files.split('\0').filter(|f| !f.is_empty()) {
        let path = root.join(rel);
        if path.is_file() {
            image.file_from(&path, &path)?;
        }
    }
    Ok(())
}

/// Test binaries and binaries at their host paths, without debug info.
fn workspace_binaries(image: &mut Image, artifacts: &Artifacts, build: &Path) -> Result<()> {
    let executables = artifacts
        .tests
        .iter()
        .map(|t| &t.executable)
        .chain(&artifacts.bins);
    for exe in executables {
        let rel = exe.strip_prefix("/").unwrap_or(exe);
        let stripped = build.join("stripped").join(rel);
        stripped_copy(exe, &stripped)?;
        image.file_from(exe, &stripped)?;
        image.libraries_of(&stripped)?;
    }
    Ok(())
}

/// The modules named in modules.txt plus their dependencies, in load order, listed in
/// /vmtest/modules for the init's insmod loop. Compressed modules are decompressed here.
fn kernel_modules(image: &mut Image, kernel: &Kernel, list: &Path, build: &Path) -> Result<()> {
    let text = fs::read_to_string(list).with_context(|| format!("{}", list.display()))?;
    let modules_dir = kernel.modules_dir();
    // (module file, insmod parameters) in load order.
    let mut load_order: Vec<(PathBuf, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, params) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (name, optional) = match name.strip_suffix('?') {
            Some(name) => (name, true),
            None => (name, false),
        };
        let shown = Command::new("modprobe")
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.version, "--show-depends", name])
            .output()
            .context("cannot run modprobe")?;
        if !shown.status.success() {
            if optional {
                eprintln!("xtask: optional module {name} is not in {}", kernel.version);
                continue;
            }
            bail!(
                "{}:{}: module `{name}` not found in kernel {} ({}); mark it optional with a \
                 trailing `?`",
                list.display(),
                index + 1,
                kernel.version,
                String::from_utf8_lossy(&shown.stderr).trim()
            );
        }
        // "insmod /path/mod.ko" per module, dependencies first, the named module last;
        // "builtin name" needs nothing.
        let shown = String::from_utf8_lossy(&shown.stdout);
        let paths: Vec<PathBuf> = shown
            .lines()
            .filter_map(|dep| dep.strip_prefix("insmod "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(PathBuf::from)
            .collect();
        for (i, path) in paths.iter().enumerate() {
            let own_params = if i + 1 == paths.len() {
                params.trim()
            } else {
                ""
            };
            match load_order.iter_mut().find(|(p, _)| p == path) {
                Some((_, existing)) if !own_params.is_empty() => *existing = own_params.into(),
                Some(_) => {}
                None => load_order.push((path.clone(), own_params.to_owned())),
            }
        }
    }
    let mut listing = String::new();
    for (source, params) in load_order {
        let rel = source.strip_prefix(&modules_dir).with_context(|| {
            format!("{} is outside {}", source.display(), modules_dir.display())
        })?;
        let name = rel.to_string_lossy();
        let (plain, decompressor) = match name.rsplit_once(".ko.") {
            Some((stem, "xz")) => (format!("{stem}.ko"), Some("xz")),
            Some((stem, "zst")) => (format!("{stem}.ko"), Some("zstd")),
            Some((stem, "gz")) => (format!("{stem}.ko"), Some("gzip")),
            _ => (name.clone().into_owned(), None),
        };
        let in_image = format!("/lib/modules/{}/{plain}", kernel.version);
        let file = match decompressor {
            None => source.clone(),
            Some(tool) => {
                // busybox insmod cannot read compressed modules.
                let dest = build.join("modules").join(&kernel.version).join(&plain);
                if !dest.exists() {
                    fs::create_dir_all(dest.parent().unwrap_or(build))?;
                    let out = Command::new(tool).arg("-dc").arg(&source).output()?;
                    if !out.status.success() {
                        bail!("{tool} -dc {} failed", source.display());
                    }
                    fs::write(&dest, out.stdout)?;
                }
                dest
            }
        };
        image.file_from(Path::new(&in_image), &file)?;
        listing.push_str(&format!("{in_image} {params}\n"));
    }
    image.bytes("/vmtest/modules", listing, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tool_list_errors_name_the_line() {
        let file = std::env::temp_dir().join(format!("xtask-host-tools-{}", std::process::id()));
        fs::write(
            &file,
            "# comment\n/usr/sbin/ipvsadm ipvsadm\n\nusr/bin/ip iproute2\n",
        )
        .unwrap();
        let err = HostTool::read_list(&file).unwrap_err().to_string();
        fs::write(&file, "/usr/bin/ip\n").unwrap();
        let err2 = HostTool::read_list(&file).unwrap_err().to_string();
        fs::write(&file, "/usr/sbin/ipvsadm ipvsadm # reference tool\n").unwrap();
        let ok = HostTool::read_list(&file).unwrap();
        fs::remove_file(&file).unwrap();
        assert!(
            err.contains(":4: `usr/bin/ip` is not an absolute path"),
            "{err}"
        );
        assert!(
            err2.contains(":1: expected `ABSOLUTE-PATH DEBIAN-PACKAGE`"),
            "{err2}"
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].path, Path::new("/usr/sbin/ipvsadm"));
        assert_eq!(ok[0].package, "ipvsadm");
    }
}
