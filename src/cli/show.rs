//! `-o text|json|yaml` for the commands that show objects.

use serde::Serialize;

use super::CliError;

/// How a command prints what it shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// For a person: a table, a status, a timeline.
    #[default]
    Text,
    /// The objects as the API server has them.
    Json,
    Yaml,
}

/// Print `object` as JSON or YAML (for `Text` the command prints its own view).
pub fn print_object<T: Serialize>(format: ShowFormat, object: &T) -> Result<(), CliError> {
    let text = match format {
        ShowFormat::Text | ShowFormat::Json => serde_json::to_string_pretty(object)
            .map(|t| t + "\n")
            .map_err(|e| CliError::Output(e.to_string()))?,
        ShowFormat::Yaml => {
            yaml_serde::to_string(object).map_err(|e| CliError::Output(e.to_string()))?
        }
    };
    print!("{text}");
    Ok(())
}

/// Objects as a `v1 List`, as kubectl prints several.
pub fn list_of<T: Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}
