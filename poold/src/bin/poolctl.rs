use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    poold::cli::poolctl(poold::cli::PoolctlArgs::parse()).await
}
