//! What a service's workers may do and write: kept capabilities and tmpfs mounts.

use super::{ByteSize, KeyPath, ServiceConfig};
use caps::Capability;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// The preset name for Docker's default capability set.
pub const DOCKER_DEFAULT: &str = "docker-default";

/// Docker's (moby's `oci/caps/defaults.go`) default capability set, the one most official
/// images are written for.
pub const DOCKER_DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Size of a tmpfs given without one.
pub const DEFAULT_TMPFS_BYTES: u64 = 64 << 20;

/// One `tmpfs` entry: an empty tmpfs on `target` inside the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmpfsMount {
    pub target: PathBuf,
    pub size_bytes: u64,
}

/// Parses one capability entry: a name as capabilities(7) spells it, or the preset.
fn parse_capability(entry: &str) -> Result<Vec<Capability>, String> {
    if entry == DOCKER_DEFAULT {
        return Ok(DOCKER_DEFAULT_CAPS.to_vec());
    }
    if let Ok(cap) = Capability::from_str(entry) {
        return Ok(vec![cap]);
    }
    let upper = entry.to_ascii_uppercase();
    let guess = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    let hint = if Capability::from_str(&guess).is_ok() {
        format!("; did you mean {guess:?}?")
    } else {
        String::new()
    };
    Err(format!(
        "{entry:?} is not a capability: expected a name as capabilities(7) spells it (e.g. \
         \"CAP_CHOWN\") or \"{DOCKER_DEFAULT}\"{hint}"
    ))
}

/// Parses one `tmpfs` entry: `PATH` or `PATH:SIZE` ("/run:16M").
fn parse_tmpfs(entry: &str) -> Result<TmpfsMount, String> {
    let (path, size) = match entry.rsplit_once(':') {
        Some((path, size)) => (path, Some(size)),
        None => (entry, None),
    };
    let target = PathBuf::from(path);
    let plain = target.is_absolute()
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || target == Path::new("/") {
        return Err(format!(
            "{entry:?}: expected \"/absolute/path\" or \"/absolute/path:SIZE\" (e.g. \"/run:16M\"), \
             a path other than / without . or .."
        ));
    }
    if ["/proc", "/dev", "/sys"]
        .iter()
        .any(|p| target.starts_with(p))
    {
        return Err(format!(
            "{entry:?}: /proc, /dev and /sys are the sandbox's own mounts"
        ));
    }
    let size_bytes = match size {
        None => DEFAULT_TMPFS_BYTES,
        Some(size) => {
            let size = ByteSize::from_str(size).map_err(|e| format!("{entry:?}: {e}"))?;
            if size.bytes() < 4096 {
                return Err(format!("{entry:?}: a tmpfs needs at least one page (4K)"));
            }
            size.bytes()
        }
    };
    Ok(TmpfsMount { target, size_bytes })
}

impl ServiceConfig {
    /// The capabilities the workers keep (duplicates removed, in a stable order). Entries
    /// that do not parse are left out; `poold check` reports them.
    pub fn kept_capabilities(&self) -> Vec<Capability> {
        let mut kept: Vec<Capability> = self
            .capabilities
            .iter()
            .filter_map(|e| parse_capability(e).ok())
            .flatten()
            .collect();
        kept.sort_by_key(|c| c.index());
        kept.dedup();
        kept
    }

    /// The tmpfs mounts of the workers; entries that do not parse are left out.
    pub fn tmpfs_mounts(&self) -> Vec<TmpfsMount> {
        self.tmpfs
            .iter()
            .filter_map(|e| parse_tmpfs(e).ok())
            .collect()
    }
}

/// The problems with `capabilities` and `tmpfs` of service `index`.
pub(super) fn problems(index: usize, service: &ServiceConfig) -> Vec<(KeyPath, String)> {
    let at = |key: &str, i: usize| KeyPath::service(index).key(key).index(i);
    let mut problems = Vec::new();
    for (i, entry) in service.capabilities.iter().enumerate() {
        if let Err(message) = parse_capability(entry) {
            problems.push((at("capabilities", i), message));
        }
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for (i, entry) in service.tmpfs.iter().enumerate() {
        match parse_tmpfs(entry) {
            Err(message) => problems.push((at("tmpfs", i), message)),
            Ok(m) if seen.contains(&m.target) => problems.push((
                at("tmpfs", i),
                format!("{} is listed twice", m.target.display()),
            )),
            Ok(m) => seen.push(m.target),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_as_in_capabilities_7_or_the_preset() {
        assert_eq!(
            parse_capability("CAP_CHOWN").unwrap(),
            vec![Capability::CAP_CHOWN]
        );
        assert_eq!(parse_capability(DOCKER_DEFAULT).unwrap().len(), 14);
        let e = parse_capability("chown").unwrap_err();
        assert!(e.contains("did you mean \"CAP_CHOWN\""), "{e}");
        let e = parse_capability("CAP_WIZARD").unwrap_err();
        assert!(
            e.contains("not a capability") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn tmpfs_entries_take_an_optional_size() {
        assert_eq!(
            parse_tmpfs("/run").unwrap(),
            TmpfsMount {
                target: "/run".into(),
                size_bytes: DEFAULT_TMPFS_BYTES
            }
        );
        assert_eq!(
            parse_tmpfs("/var/lib/nginx:16M").unwrap().size_bytes,
            16 << 20
        );
        for bad in ["run", "/", "/a/../b", "/run:lots", "/proc/x", "/run:1"] {
            assert!(parse_tmpfs(bad).is_err(), "{bad}");
        }
    }
}
