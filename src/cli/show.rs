//! `-o text|json|yaml` for the commands that show objects.

use serde::Serialize;

use super::CliError;
use crate::core::inert;

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

/// Print `object` as JSON or YAML (for `Text` the command prints its own view). Nothing
/// in it reaches the terminal raw (`core::inert`): JSON escapes what serde_json leaves raw;
/// YAML escapes inside double quotes, and is printed as JSON (which is YAML too) when a
/// character no YAML escape can reach would go out raw.
pub fn print_object<T: Serialize>(format: ShowFormat, object: &T) -> Result<(), CliError> {
    print!("{}", render_object(format, object)?);
    Ok(())
}

/// What [`print_object`] prints.
pub fn render_object<T: Serialize>(format: ShowFormat, object: &T) -> Result<String, CliError> {
    let json = || {
        serde_json::to_string_pretty(object)
            .map(|t| inert::json_output(&t).into_owned() + "\n")
            .map_err(|e| CliError::Output(e.to_string()))
    };
    match format {
        ShowFormat::Text | ShowFormat::Json => json(),
        ShowFormat::Yaml => {
            let yaml =
                yaml_serde::to_string(object).map_err(|e| CliError::Output(e.to_string()))?;
            match inert::yaml_output(&yaml) {
                Some(safe) => Ok(safe.into_owned()),
                None => json(),
            }
        }
    }
}

/// Objects as a `v1 List`, as kubectl prints several.
pub fn list_of<T: Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}
