//! Local copies of remote directories, for readers that need a real file: the HF safetensors loader
//! memory-maps its files, and the tokenizer library opens `tokenizer.json` by path. A `gs://` directory is
//! downloaded once per process into a temporary directory (streamed object by object with read-ahead);
//! [`remove_staged`] deletes those copies when the command ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use super::{Location, Result, StorageError};

static STAGED: LazyLock<Mutex<HashMap<(Location, String), tempfile::TempDir>>> = LazyLock::new(Default::default);

/// The local directory holding `dir`: `dir` itself when local; for `gs://`, a temporary copy of the files
/// directly under it whose names `keep` accepts (made on the first call, reused after; `what` names the
/// key in the log line and tells copies of one directory with different filters apart). A remote
/// directory with no such file is [`StorageError::NotFound`].
pub fn local_dir(dir: &Location, what: &str, keep: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let Location::Gcs { .. } = dir else {
        return Ok(dir.as_local().expect("a local location").to_path_buf());
    };
    let mut staged = STAGED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = staged.get(&(dir.clone(), what.to_string())) {
        return Ok(t.path().to_path_buf());
    }
    let files: Vec<(String, u64)> = dir.walk()?.into_iter().filter(|(rel, _)| !rel.contains('/') && keep(rel)).collect();
    if files.is_empty() {
        return Err(StorageError::NotFound { loc: format!("{dir} (no files to copy for {what})") });
    }
    let tmp = tempfile::Builder::new().prefix("maxtext-staged-").tempdir().map_err(|source| StorageError::Io {
        op: "create a temporary directory for",
        loc: dir.to_string(),
        source,
    })?;
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    eprintln!(
        "{what}: copying {} files ({:.1} MB) from {dir} to {} (read from a local copy: the loader needs local files)",
        files.len(),
        total as f64 / 1e6,
        tmp.path().display()
    );
    for (name, _) in &files {
        let src = dir.join(name);
        let dst = tmp.path().join(name);
        let io = |op: &'static str, source| StorageError::Io { op, loc: dst.display().to_string(), source };
        let mut out = std::fs::File::create(&dst).map_err(|e| io("create", e))?;
        std::io::copy(&mut src.open()?, &mut out).map_err(|e| io("write", e))?;
    }
    let path = tmp.path().to_path_buf();
    staged.insert((dir.clone(), what.to_string()), tmp);
    Ok(path)
}

/// Deletes every staged copy (the command is done with them). Statics are never dropped, so the commands
/// call this on their way out.
pub fn remove_staged() {
    STAGED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
