//! `ipvsctl`: ipvsadm-compatible IPVS administration on this crate's library.
//! Parsing, running and printing live in `ipvs::cli`; this only wires up the process.

use std::io::Write;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let status = ipvs::cli::run(
        &argv,
        &mut ipvs::Client::new,
        &mut std::io::stdin().lock(),
        &mut out,
        &mut std::io::stderr().lock(),
    );
    // A closed pipe (`ipvsctl -L | head`) is not an error worth reporting.
    let _ = out.flush();
    std::process::exit(status);
}
