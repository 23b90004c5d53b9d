//! The daemon's own surfaces against local users and hostile clients, through the proxy on
//! loopback (runs on any Linux host as root; needs wrk and setpriv).

mod e2e_support;

use e2e_support::hardening;

#[test]
fn e2e_state_dir_and_control_socket_are_private_under_umask_000() {
    hardening::private_state_dir_and_control_socket_under_umask_000();
}

#[test]
fn e2e_second_poold_with_the_same_state_dir_leaves_the_first_alone() {
    hardening::second_instance_leaves_the_first_alone();
}

#[test]
fn e2e_recycle_closes_idle_clients_of_gone_workers() {
    hardening::recycle_closes_idle_clients_of_gone_workers();
}

#[test]
fn e2e_hostile_clients_change_nothing() {
    hardening::hostile_clients_change_nothing("hostile_client_role");
}

/// Not a test of its own: the hostile client that e2e_hostile_clients_change_nothing runs
/// as user nobody (this binary re-executed); without its environment it does nothing.
#[test]
fn hostile_client_role() {
    hardening::attacker_main();
}
