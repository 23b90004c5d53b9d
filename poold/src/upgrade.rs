//! The planned binary upgrade (`poolctl upgrade`, SIGUSR2): poold execs a fresh poold and
//! hands it what must not be closed for a moment: the proxy's listening sockets, the metrics
//! listener and the state-directory lock, as inherited descriptors named in
//! [`INHERITED_FDS_ENV`]. The new process writes "ready" to the pipe named in
//! [`READY_FD_ENV`] once it serves; only then does the old one stop accepting.
//!
//! Hand-off invariant: at every moment exactly one process supervises the workers, and the
//! listening sockets are never closed (both processes hold them during the overlap, so the
//! kernel queues connections for whichever accepts). The old process freezes its pools
//! before the exec and, if the new one fails, thaws them and carries on as before.

use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

/// `NAME=FD,...`: `lock`, `metrics`, `proxy:SERVICE`.
pub const INHERITED_FDS_ENV: &str = "POOLD_INHERITED_FDS";
/// The write end of the pipe the new poold writes "ready\n" to.
pub const READY_FD_ENV: &str = "POOLD_READY_FD";
/// Test hook: exec this binary instead of the one poold was started from.
pub const EXEC_OVERRIDE_ENV: &str = "POOLD_UPGRADE_EXEC";
/// How long the new poold has to report ready.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FdListError {
    #[error("{INHERITED_FDS_ENV}: entry {entry:?}: expected NAME=FD with FD a number from 3")]
    BadEntry { entry: String },
    #[error("{INHERITED_FDS_ENV}: {name:?} named twice")]
    Duplicate { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already under way")]
    InProgress,
    #[error("starting the new poold ({path}): {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("the new poold exited before it was ready ({status}); the old one keeps running")]
    Exited { status: String },
    #[error(
        "the new poold did not report ready within {secs} s; killed it, the old one keeps running"
    )]
    Timeout { secs: u64 },
    #[error("upgrade: {operation}: {source}")]
    Io {
        operation: &'static str,
        source: std::io::Error,
    },
}

/// Formats `(name, fd)` pairs for [`INHERITED_FDS_ENV`].
pub fn format_fds(fds: &[(String, RawFd)]) -> String {
    fds.iter()
        .map(|(name, fd)| format!("{name}={fd}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`INHERITED_FDS_ENV`]; an empty value names nothing.
pub fn parse_fds(text: &str) -> Result<BTreeMap<String, RawFd>, FdListError> {
    let mut fds = BTreeMap::new();
    for entry in text.split(',').filter(|e| !e.is_empty()) {
        let bad = || FdListError::BadEntry {
            entry: entry.to_owned(),
        };
        // The service name may not contain '=' (config validation), so the last one splits.
        let (name, fd) = entry.rsplit_once('=').ok_or_else(bad)?;
        let fd: RawFd = fd.parse().map_err(|_| bad())?;
        if name.is_empty() || fd < 3 {
            return Err(bad());
        }
        if fds.insert(name.to_owned(), fd).is_some() {
            return Err(FdListError::Duplicate {
                name: name.to_owned(),
            });
        }
    }
    Ok(fds)
}

fn inherited() -> &'static Mutex<BTreeMap<String, OwnedFd>> {
    static INHERITED: OnceLock<Mutex<BTreeMap<String, OwnedFd>>> = OnceLock::new();
    INHERITED.get_or_init(Mutex::default)
}

static EXEC_PATH: OnceLock<std::path::PathBuf> = OnceLock::new();

/// At the very start, single-threaded: takes ownership of the descriptors a previous poold
/// handed over (each gets CLOEXEC again; the ready pipe as `ready`), removes both
/// variables from the environment (nothing poold starts sees them), and remembers the
/// binary path for a later upgrade.
pub fn take_inherited_from_env() -> Result<(), FdListError> {
    if let Ok(path) = std::env::current_exe() {
        let _ = EXEC_PATH.set(path);
    }
    let mut fds = match std::env::var(INHERITED_FDS_ENV) {
        Ok(text) => parse_fds(&text)?,
        Err(_) => BTreeMap::new(),
    };
    if let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse::<RawFd>().ok())
        .filter(|fd| *fd >= 3)
    {
        fds.insert("ready".to_owned(), fd);
    }
    std::env::remove_var(INHERITED_FDS_ENV);
    std::env::remove_var(READY_FD_ENV);
    let mut owned = inherited().lock().unwrap_or_else(|e| e.into_inner());
    for (name, fd) in fds {
        owned.insert(name, crate::sandbox::sys::own_inherited_fd(fd));
    }
    Ok(())
}

/// The descriptor named `name` by the previous poold, once.
pub fn take(name: &str) -> Option<OwnedFd> {
    inherited()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
}

/// The inherited listening socket `name` if it listens on `listen`.
pub fn take_listener(name: &str, listen: std::net::SocketAddr) -> Option<std::net::TcpListener> {
    let listener = std::net::TcpListener::from(take(name)?);
    match listener.local_addr() {
        Ok(addr) if addr == listen || (listen.port() == 0 && addr.ip() == listen.ip()) => {
            tracing::info!(name, %listen, "listening socket inherited from the previous poold");
            Some(listener)
        }
        _ => None,
    }
}

/// True from the start of a poold exec'd by an upgrade until it reported ready: until
/// then the previous poold owns everything, so a failure must tear nothing down.
pub fn handover_pending() -> bool {
    inherited()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key("ready")
}

/// Tells the previous poold (if it started this one) that this one serves.
pub fn report_ready() {
    let Some(fd) = take("ready") else { return };
    let mut pipe = std::fs::File::from(fd);
    if let Err(error) = std::io::Write::write_all(&mut pipe, b"ready\n") {
        tracing::warn!(%error, "telling the previous poold that this one is ready failed");
    }
}

/// Starts the new poold with `fds` inherited and waits until it reports ready. Returns its
/// pid; on failure the child is gone (killed if it still ran).
pub async fn exec_new(fds: Vec<(String, RawFd)>) -> Result<u32, UpgradeError> {
    let path = std::env::var_os(EXEC_OVERRIDE_ENV)
        .map(std::path::PathBuf::from)
        .or_else(|| EXEC_PATH.get().cloned())
        .ok_or_else(|| UpgradeError::Io {
            operation: "finding the binary poold was started from",
            source: std::io::Error::other("unknown"),
        })?;
    let io = |operation| move |source| UpgradeError::Io { operation, source };
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;
    let ready_fd = std::os::fd::AsRawFd::as_raw_fd(&ready_write);
    let mut keep: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).collect();
    keep.push(ready_fd);
    let mut command = std::process::Command::new(&path);
    command
        .args(std::env::args_os().skip(1))
        .env(INHERITED_FDS_ENV, format_fds(&fds))
        .env(READY_FD_ENV, ready_fd.to_string())
        .env_remove(EXEC_OVERRIDE_ENV);
    crate::sandbox::sys::keep_fds_across_exec(&mut command, keep);
    let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
        path: path.display().to_string(),
        source,
    })?;
    drop(ready_write);
    let pid = child.id();
    tracing::info!(pid, path = %path.display(), "upgrade: new poold started; waiting for it to be ready");
    // EOF without "ready" means the child exited (or closed the pipe): a failure.
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let mut pipe = std::fs::File::from(ready_read);
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let outcome = tokio::time::timeout(READY_TIMEOUT, read).await;
    let ready = matches!(&outcome, Ok(Ok(text)) if text.starts_with("ready"));
    if ready {
        // Not our child to wait for once we exit; until then reap it if it dies.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        return Ok(pid);
    }
    let _ = child.kill();
    let status = child.wait().map_err(io("waiting for the new poold"))?;
    match outcome {
        Err(_) => Err(UpgradeError::Timeout {
            secs: READY_TIMEOUT.as_secs(),
        }),
        Ok(_) => Err(UpgradeError::Exited {
            status: status.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let fds = vec![
            ("lock".to_owned(), 3),
            ("metrics".to_owned(), 4),
            ("proxy:web".to_owned(), 7),
        ];
        let text = format_fds(&fds);
        assert_eq!(text, "lock=3,metrics=4,proxy:web=7");
        let parsed = parse_fds(&text).unwrap();
        assert_eq!(parsed.into_iter().collect::<Vec<_>>(), fds);
        assert!(parse_fds("").unwrap().is_empty());
    }

    #[test]
    fn bad_lists_are_refused_naming_the_entry() {
        for bad in [
            "lock",
            "lock=x",
            "=4",
            "lock=2",
            "lock=-1",
            "proxy:web=3,lock",
        ] {
            let error = parse_fds(bad).unwrap_err();
            assert!(
                matches!(error, FdListError::BadEntry { .. }),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            parse_fds("lock=3,lock=4").unwrap_err(),
            FdListError::Duplicate {
                name: "lock".to_owned()
            }
        );
        assert_eq!(
            parse_fds("proxy:web=3,x").unwrap_err().to_string(),
            "POOLD_INHERITED_FDS: entry \"x\": expected NAME=FD with FD a number from 3"
        );
    }
}
