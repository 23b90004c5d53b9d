//! `ipvsctl`: ipvsadm-compatible IPVS administration on the `ipvs` library.
//! Parsing, running and printing live in [`cli`]; this only wires up the process.

#![forbid(unsafe_code)]

mod cli;

use std::io::Write;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let status = cli::run(
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
