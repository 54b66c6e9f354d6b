//! Reading the files the CLI is given: YAML or JSON, one or more documents, decoded
//! strictly (unknown fields are errors) with messages that name the file and the field.
//!
//! Each step has its module: `files` finds and reads the files, `nesting` refuses
//! nesting too deep to parse, `manifest` turns YAML into the JSON kubectl would send,
//! and `decode` decodes that strictly as a type. The callers use the re-exports here.

mod decode;
mod files;
mod manifest;
mod nesting;

use std::path::{Path, PathBuf};

pub use decode::{decode_all, decode_all_checked, decode_document, decode_value, expect_kind};
pub use files::{MAX_FILE_BYTES, expand, read};
pub use manifest::{documents, numbered_documents};
pub use nesting::MAX_NESTING;

/// A bad input: which file, which field (when known), and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), field.as_deref().map(|f| format!(": {f}")).unwrap_or_default())]
pub struct InputError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

/// yaml_serde already prefixes some messages with the path; say it once.
fn without_path(field: &str, error: &impl std::fmt::Display) -> String {
    let message = error.to_string();
    match message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
    {
        Some(rest) => rest.to_string(),
        None => message,
    }
}
