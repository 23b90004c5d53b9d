//! systemd's notification protocol (sd_notify): under a `Type=notify` unit systemd learns
//! when poold serves, when it stops and, after `poolctl upgrade`, which process is poold
//! now. Without `NOTIFY_SOCKET` in the environment nothing is sent.

use sd_notify::NotifyState;

/// Every service has started and the control socket listens.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A stop signal came: poold drains and stops.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining and stopping"),
    ]);
}

/// After an upgrade's hand-over, `pid` (the new poold) is the service's main process. Sent
/// by the old one, still the main process (`NotifyAccess=main` suffices); without it systemd
/// would take the old process's exit for the service's end and stop the new one with it.
pub fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid)]);
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, ?states, "telling the service manager (NOTIFY_SOCKET) failed");
    }
}
