use super::*;
use futures::FutureExt;

/// `admit` when it decides at once (it only waits for pending evictions).
fn admit_now(limiter: &ConnLimiter) -> Option<Admission> {
    limiter
        .admit()
        .now_or_never()
        .expect("admit waited without pending evictions")
}

#[test]
fn at_the_limit_the_longest_idle_connection_makes_room() {
    let limiter = ConnLimiter::new("test", 2, Duration::ZERO, 0);
    let first = admit_now(&limiter).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let second = admit_now(&limiter).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    second.activity().touch();
    let third = admit_now(&limiter).expect("an idle connection was evicted");
    assert_eq!(limiter.open(), 2);
    // `first` was idle the longest: it is the one told to close.
    let evicted = futures::FutureExt::now_or_never(first.evicted());
    assert!(
        evicted.is_some(),
        "the longest idle connection was not evicted"
    );
    assert!(futures::FutureExt::now_or_never(second.evicted()).is_none());
    drop(first);
    assert_eq!(
        limiter.open(),
        2,
        "dropping an evicted connection frees nothing twice"
    );
    drop((second, third));
    assert_eq!(limiter.open(), 0);
}

#[test]
fn evictions_wait_for_the_evicted_to_close() {
    let limiter = ConnLimiter::new("test", 1, Duration::ZERO, 0);
    let mut open = vec![admit_now(&limiter).unwrap()];
    // Each admission evicts the one before, which stays open (not yet dropped).
    for _ in 0..MAX_PENDING_EVICTIONS {
        open.push(admit_now(&limiter).expect("room made by eviction"));
    }
    // Beyond the bound the next admission waits, neither evicting nor refusing.
    let mut next = Box::pin(limiter.admit());
    assert!(
        (&mut next).now_or_never().is_none(),
        "evicted without bound, or refused a client an idle one can make room for"
    );
    assert_eq!(limiter.open(), 1);
    open.remove(0);
    assert!(
        next.now_or_never()
            .expect("woken by the closed eviction")
            .is_some(),
        "a closed eviction makes room again"
    );
}

#[test]
fn busy_or_recently_active_connections_are_never_evicted() {
    let limiter = ConnLimiter::new("test", 1, Duration::from_secs(3600), 0);
    let only = admit_now(&limiter).unwrap();
    assert!(
        admit_now(&limiter).is_none(),
        "evicted a connection active just now"
    );
    let limiter = ConnLimiter::new("test", 1, Duration::ZERO, 0);
    let only = (only, admit_now(&limiter).unwrap());
    let _busy = only.1.activity().busy();
    assert!(
        admit_now(&limiter).is_none(),
        "evicted a connection with a request in flight"
    );
}

#[test]
fn resource_errors_are_told_apart() {
    for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
        assert!(is_local_resource_error(&std::io::Error::from_raw_os_error(
            errno
        )));
    }
    for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EHOSTUNREACH] {
        assert!(!is_local_resource_error(
            &std::io::Error::from_raw_os_error(errno)
        ));
    }
}
