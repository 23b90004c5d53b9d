use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn existing_directories_are_made_private_and_locked_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("images/abc")).unwrap();
    std::fs::set_permissions(&state, Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(state.join("images"), Permissions::from_mode(0o755)).unwrap();
    let held = StateDir::open(&state, None).unwrap();
    assert_eq!(mode(&state), 0o700);
    for sub in SUBDIRS {
        assert_eq!(mode(&state.join(sub)), 0o700, "{sub}");
    }
    let again = StateDir::open(&state, None).unwrap_err().to_string();
    let pid = std::process::id();
    assert!(again.contains(&format!("pid {pid}")), "{again}");
    held.release();
    assert!(!state.join("workers").exists(), "empty subdirectory left");
    assert!(
        state.join("images/abc").exists(),
        "the image cache was removed"
    );
    StateDir::open(&state, None).unwrap().release();
}

#[test]
fn a_control_group_may_traverse_to_the_socket_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let held = StateDir::open(&state, Some(Gid::from_raw(65534))).unwrap();
    assert_eq!(mode(&state), 0o710);
    assert_eq!(std::fs::metadata(&state).unwrap().gid(), 65534);
    for sub in SUBDIRS {
        assert_eq!(mode(&state.join(sub)), 0o700, "{sub}");
    }
    held.release();
}

/// An upgrade hands the locked descriptor over: the new holder takes it without the
/// directory ever being unlocked, while any other open is still refused.
#[test]
fn the_inherited_lock_is_taken_over_and_stays_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let old = StateDir::open(&state, None).unwrap();
    let handed = File::from(
        std::os::fd::AsFd::as_fd(&**old.lock.as_ref().unwrap())
            .try_clone_to_owned()
            .unwrap(),
    );
    let new = StateDir::open_inherited(&state, None, Some(handed)).unwrap();
    // A new poold that fails drops its StateDir: the old one's lock must hold.
    drop(new);
    let other = StateDir::open(&state, None).unwrap_err().to_string();
    assert!(other.contains("in use by another poold"), "{other}");
    old.release();
    StateDir::open(&state, None).unwrap().release();
}
