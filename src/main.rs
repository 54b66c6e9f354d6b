//! The `countersign` binary.

use std::process::ExitCode;

use clap::Parser;
use countersign::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
