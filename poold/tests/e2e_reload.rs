//! `poolctl reload` and `poolctl deploy` against the real poold with the in-process proxy
//! (runs on any Linux host as root).

mod e2e_support;

#[test]
fn e2e_reload_adds_removes_and_rolls() {
    e2e_support::reload::reload_adds_removes_and_rolls();
}

#[test]
fn e2e_deploy_and_roll_back() {
    e2e_support::reload::deploy_and_roll_back();
}
