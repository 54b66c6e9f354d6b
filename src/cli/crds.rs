//! `countersign crds`: print the CRDs, or write them into a directory (that is how `crds/`
//! is generated).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::api::crd_documents;

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one `<plural>.<group>.yaml` per CRD into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> Result<ExitCode, CliError> {
    let documents =
        crd_documents().map_err(|e| CliError::Output(format!("cannot render the CRDs: {e}")))?;
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Output(format!("{}: {e}", dir.display())))?;
            for (name, text) in &documents {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| CliError::Output(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let all: String = documents.iter().map(|(_, text)| text.as_str()).collect();
            std::io::stdout()
                .write_all(all.as_bytes())
                .map_err(|e| CliError::Output(format!("stdout: {e}")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
