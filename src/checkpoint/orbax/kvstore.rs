//! The key-value view of an item directory: zarr keys (`<name>/.zarray`, `<name>/c/0/0`, ...) stored either
//! as plain files under the directory or inside its OCDBT database.

use std::path::{Path, PathBuf};

use super::ocdbt::OcdbtDatabase;

#[derive(Debug)]
pub enum KvStore {
    Files(PathBuf),
    Ocdbt(OcdbtDatabase),
}

impl KvStore {
    /// The value of `key`, `None` if absent. Errors are plain text naming the file; the caller adds which
    /// array the key belongs to.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            KvStore::Ocdbt(db) => db.get(key.as_bytes()),
            KvStore::Files(dir) => {
                let path = dir.join(key);
                match std::fs::read(&path) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(_) if path.is_dir() => Ok(None),
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                }
            }
        }
    }

    /// Where the values live, for messages: the item directory or its OCDBT database.
    pub fn describe(&self) -> String {
        match self {
            KvStore::Files(dir) => format!("plain files under {}", dir.display()),
            KvStore::Ocdbt(db) => format!("the OCDBT database in {}", db.root().display()),
        }
    }

    /// Names of the arrays whose zarr v2 metadata (`<name>/.zarray`) is present, sorted; used only when a
    /// directory has no `_METADATA`.
    pub fn zarr2_arrays(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            KvStore::Ocdbt(db) => db
                .keys()
                .filter_map(|k| std::str::from_utf8(k).ok()?.strip_suffix("/.zarray").map(str::to_owned))
                .collect(),
            KvStore::Files(dir) => list_dirs_with(dir, ".zarray"),
        };
        names.sort();
        names
    }
}

fn list_dirs_with(dir: &Path, file: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().join(file).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
