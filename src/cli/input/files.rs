//! Finding and reading the files: the manifests of a directory, and a file's text within
//! the API server's size limit.

use std::path::{Path, PathBuf};

use super::InputError;

/// The files a `FILE_OR_DIR` argument stands for: the file itself, or the `.yaml`, `.yml`
/// and `.json` files directly inside the directory, in name order.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let cannot_list =
        |e: std::io::Error| InputError::new(path, None, format!("cannot list directory: {e}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(cannot_list)? {
        let entry = entry.map_err(cannot_list)?;
        let file = entry.path();
        let manifest = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(InputError::new(
            path,
            None,
            "the directory holds no .yaml, .yml or .json files",
        ));
    }
    Ok(files)
}

/// The largest file read: 3 MiB, the Kubernetes API server's limit for a request body, so
/// no object it would take is refused.
pub const MAX_FILE_BYTES: u64 = 3 * 1024 * 1024;

/// The text of a file, refusing one larger than [`MAX_FILE_BYTES`] without reading it all.
pub fn read(file: &Path) -> Result<String, InputError> {
    use std::io::Read;
    let cannot_read = |e: std::io::Error| InputError::new(file, None, format!("cannot read: {e}"));
    let handle = std::fs::File::open(file).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(InputError::new(
            file,
            None,
            format!(
                "larger than {MAX_FILE_BYTES} bytes (3 MiB, the Kubernetes API server's limit for a request); not read"
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| InputError::new(file, None, format!("cannot read: not UTF-8 text: {e}")))
}
