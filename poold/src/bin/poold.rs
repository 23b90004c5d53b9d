fn main() {
    // Must come first: the sandbox re-executes this binary as the worker helper.
    poold::sandbox::init::maybe_run_helper();
}
