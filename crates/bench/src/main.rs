//! The `bench` binary: flags → run every section → print the table (the JSON report is
//! written by the run).

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = bench::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("bench=info,warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = bench::run(args, command)
        .await
        .context("the benchmark failed")?;
    println!("{}", report.table());
    println!(
        "report: {}/report.json",
        report.latency_csv_dir.trim_end_matches('/')
    );
    Ok(())
}
