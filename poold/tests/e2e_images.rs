//! Real images (Debian bookworm, built by `cargo xtask images`) through the real poold, via
//! the in-process proxy on loopback: runs on the host and in the VM, as root.

mod e2e_support;

#[test]
fn e2e_real_images_serve_under_load_and_explain_failures() {
    e2e_support::images::real_images_serve_and_explain_failures();
}
