//! The shell of the `countersign` binary: argument parsing and the commands that read
//! files, call the core and print. No rule lives here.

pub mod audit;
pub mod audit_verify;
pub mod check;
pub mod cluster;
pub mod crds;
pub mod input;
pub mod junit;
pub mod labels;
pub mod list;
pub mod manifest_set;
pub mod output;
pub mod present;
pub mod request;
pub mod review;
pub mod show;
pub mod status;

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
    /// List requests and change sets in flight: name, target, change, level, who it waits
    /// for, age; a set's requests beneath it.
    ///
    /// Exit status: 0 listed, 1 refused by the cluster, 2 bad input, 3 cluster unreachable.
    List(Box<list::ListArgs>),
    /// Show one request or change set: the change (a set's members), each level, the
    /// reviews, what happens next.
    Status(Box<status::StatusArgs>),
    /// Approve a request or a change set, as yourself (a set's members are approved through
    /// the set).
    ///
    /// Exit status: 0 recorded, 1 refused (not an approver of the open level, already
    /// reviewed, your own change, a member of a set, not found), 2 bad input, 3 cluster
    /// unreachable.
    Approve(Box<review::ApproveArgs>),
    /// Reject a request or a change set, as yourself, saying why (--comment).
    Reject(Box<review::RejectArgs>),
    /// The audit trail of a request or a target, oldest first; `audit verify` checks that
    /// the whole trail is complete and unedited.
    Audit(Box<audit::AuditArgs>),
    /// Ask for approval of the changes in a manifest before they are applied (for a GitOps
    /// sync that comes later): two or more under one policy are one change set, approved as
    /// one; --again asks again for a rejected change.
    ///
    /// Exit status: 0 requested (or nothing to request), 1 refused, 2 bad input,
    /// 3 cluster unreachable.
    Request(Box<request::RequestArgs>),
    /// Run the admission webhook over HTTPS until SIGTERM/SIGINT.
    ///
    /// `serve --local --kubeconfig FILE --listen 127.0.0.1:PORT` installs into a development
    /// cluster, registers the webhooks on that address and removes them on exit.
    Serve(Box<crate::serve::ServeArgs>),
}

/// Parse the process's command line. Installed as `kubectl-countersign` it is a kubectl
/// plugin, and its help says `kubectl countersign`.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let invoked = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut command = Cli::command();
    if invoked.starts_with("kubectl-") {
        command = command.bin_name("kubectl countersign");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
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
    /// The cluster said no (forbidden, not found, refused by countersign's webhook).
    #[error("{0}")]
    Refused(String),
    /// The cluster could not be reached or the kubeconfig is unusable.
    #[error("{0}")]
    Connect(String),
}

/// Exit status when the cluster refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status when the cluster could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

impl CliError {
    /// An API error while doing `what`: a refusal says the API server's (or countersign's
    /// webhook's) reason as it is; anything else is a connection problem.
    pub fn from_api(what: &str, error: kube::Error) -> CliError {
        match error {
            kube::Error::Api(status) if (400..500).contains(&status.code) => {
                CliError::Refused(format!("{what}: {}", refusal_reason(&status.message)))
            }
            other => CliError::Connect(format!("{what}: {other}")),
        }
    }

    fn exit_status(&self) -> u8 {
        match self {
            CliError::Refused(_) => EXIT_REFUSED,
            CliError::Connect(_) => EXIT_UNREACHABLE,
            _ => EXIT_BAD_INPUT,
        }
    }
}

/// The reason of a refusal without the API server's wrapping of a webhook's answer.
fn refusal_reason(message: &str) -> &str {
    match message.split_once(" denied the request: ") {
        Some((prefix, reason)) if prefix.starts_with("admission webhook") => reason,
        _ => message,
    }
}

/// Run a parsed command line and return the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Serve(args) => return crate::serve::run(&args),
        Command::List(args) => on_cluster(list::run(&args)),
        Command::Status(args) => on_cluster(status::run(&args)),
        Command::Approve(args) => on_cluster(review::approve(&args)),
        Command::Reject(args) => on_cluster(review::reject(&args)),
        Command::Audit(args) => match &args.action {
            Some(audit::AuditCommand::Verify(verify)) => {
                on_cluster_status(audit_verify::run(verify))
            }
            None => on_cluster(audit::run(&args)),
        },
        Command::Request(args) => on_cluster(request::run(&args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // Messages carry what the API server and countersign's webhook said, which
            // quotes objects and names: nothing of it reaches the terminal raw.
            eprintln!(
                "countersign: error: {}",
                crate::core::inert::escaped_lines(&error.to_string())
            );
            ExitCode::from(error.exit_status())
        }
    }
}

/// Run a command that talks to the cluster.
fn on_cluster(
    command: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<ExitCode, CliError> {
    on_cluster_status(async { command.await.map(|()| ExitCode::SUCCESS) })
}

/// Run a command that talks to the cluster and says its own exit status.
fn on_cluster_status(
    command: impl std::future::Future<Output = Result<ExitCode, CliError>>,
) -> Result<ExitCode, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Connect(format!("cannot start the runtime: {e}")))?
        .block_on(command)
}
