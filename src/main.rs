//! `agora`: the one binary. It parses the command line and hands each subcommand to the crate that
//! implements it; the logic lives in the crates.

mod bench;
mod bench_agent;
mod bench_settlement;
mod bench_verify;
mod chain;
mod cli;
mod dev;
mod gpus;
mod kubernetes;
mod simulate;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One TLS crypto provider for every HTTP client in the process (reqwest, and later kube).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli);
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
