//! The shell of the `countersign` binary: argument parsing and the commands that read
//! files, call the core and print. No rule lives here.

pub mod check;
pub mod crds;
pub mod input;
pub mod labels;
pub mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use input::InputError;

/// Put human approval between a workload change and the cluster.
#[derive(Debug, Parser)]
#[command(name = "countersign", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crds(crds::CrdsArgs),
    /// Evaluate a change offline, exactly as the webhook would.
    ///
    /// Exit status: 0 allowed, 1 denied or approval required, 2 bad input.
    Check(Box<check::CheckArgs>),
    /// Run the admission webhook over HTTPS until SIGTERM/SIGINT.
    ///
    /// `serve --local --kubeconfig FILE --listen 127.0.0.1:PORT` installs into a development
    /// cluster, registers the webhooks on that address and removes them on exit.
    Serve(Box<crate::serve::ServeArgs>),
}

/// Exit status for bad input (and any other error).
pub const EXIT_BAD_INPUT: u8 = 2;

/// A failure of a command: bad input names the file and field.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// A flag's value is wrong; names the flag.
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("{0}")]
    Output(String),
}

/// Run a parsed command line and return the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Serve(args) => return crate::serve::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("countersign: error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
