//! `tokenboard`: the server and its offline tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokenboard_server::{config, serve, tools};

/// The token console for LLM API gateways.
///
/// With no subcommand, `tokenboard` runs `serve`.
#[derive(Parser)]
#[command(name = "tokenboard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML config file (also `-config FILE`); see docs/config.example.yaml.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest, console API, web console (the default).
    Serve,
    /// Check every segment of a data directory without changing it; exits 1 on corruption.
    Verify {
        /// The data directory (or its `events` folder).
        dir: PathBuf,
    },
    /// Rebuild the views offline and print a report, or re-send the events to a server.
    Replay(tools::ReplayArgs),
    /// Export events from a data directory (the server must not be running on it).
    Export(tools::ExportArgs),
    /// Import NDJSON events, CLIProxyAPI usage events or a CLIProxyAPI v1 usage export.
    Import(tools::ImportArgs),
    /// Send realistic synthetic traffic to a running server.
    Loadgen(tools::LoadgenArgs),
}

/// Accepts the original design's single-dash `-config FILE`.
fn normalise_args() -> Vec<String> {
    std::env::args()
        .map(|a| {
            if a == "-config" {
                "--config".to_string()
            } else if let Some(v) = a.strip_prefix("-config=") {
                format!("--config={v}")
            } else {
                a
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalise_args());
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => config::Config::load(cli.config.as_deref()).map_err(|e| e.to_string()).and_then(serve::run),
        Command::Verify { dir } => tools::verify(&dir),
        Command::Replay(a) => tools::replay(a),
        Command::Export(a) => tools::export(a),
        Command::Import(a) => tools::import(a),
        Command::Loadgen(a) => tools::loadgen(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenboard: {e}");
            ExitCode::FAILURE
        }
    }
}
