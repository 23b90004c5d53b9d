//! The operator's verbs (`poolctl drain`, `undrain`) and the readiness endpoint, against the
//! real poold with the in-process proxy (runs on any Linux host as root).

mod e2e_support;

#[test]
fn e2e_drain_and_readiness() {
    e2e_support::control::drain_and_readiness();
}

#[test]
fn e2e_slot_drain_scale_and_recycle() {
    e2e_support::control::slot_drain_scale_and_recycle();
}

#[test]
fn e2e_second_signal_hurries_shutdown() {
    e2e_support::control::second_signal_hurries_shutdown();
}

#[test]
fn e2e_stop_signal_reaches_the_program() {
    e2e_support::control::stop_signal_reaches_the_program();
}
