//! The key-value view of an item directory: zarr keys (`<name>/.zarray`, `<name>/c/0/0`, ...) stored either
//! as plain files under the directory or inside its OCDBT database.

use super::ocdbt::{OcdbtDatabase, ValueRef};
use crate::storage::Location;

/// Where one value lies: inline (small values in the OCDBT tree) or a byte range of a file.
#[derive(Clone, Debug)]
pub enum ValueLocation {
    Inline(Vec<u8>),
    File { path: Location, offset: u64, length: u64 },
}

impl ValueLocation {
    pub fn len(&self) -> u64 {
        match self {
            ValueLocation::Inline(b) => b.len() as u64,
            ValueLocation::File { length, .. } => *length,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader over bytes `[start, start + len)` of the value (ranged: nothing else is read).
    pub fn open_range(&self, start: u64, len: u64) -> Result<Box<dyn std::io::Read + '_>, String> {
        use std::io::{Read, Seek, SeekFrom};
        if start.checked_add(len).map_or(true, |e| e > self.len()) {
            return Err(format!("byte range {start}+{len} is outside a value of {} bytes", self.len()));
        }
        match self {
            ValueLocation::Inline(b) => Ok(Box::new(&b[start as usize..(start + len) as usize])),
            ValueLocation::File { path: path @ Location::Local(_), offset, .. } => {
                let mut f = path.open().map_err(|e| e.to_string())?;
                f.seek(SeekFrom::Start(offset + start)).map_err(|e| format!("cannot seek in {path}: {e}"))?;
                Ok(Box::new(f.take(len)))
            }
            // One ranged GET for exactly these bytes: a restore reads only the shards it needs.
            ValueLocation::File { path, offset, .. } => {
                Ok(Box::new(std::io::Cursor::new(path.read_range(offset + start, len).map_err(|e| e.to_string())?)))
            }
        }
    }

    /// Bytes `[start, start + len)` of the value.
    pub fn read_range(&self, start: u64, len: u64) -> Result<Vec<u8>, String> {
        match self {
            ValueLocation::File { path, offset, .. } if start.checked_add(len).is_some_and(|e| e <= self.len()) => {
                path.read_range(offset + start, len).map_err(|e| e.to_string())
            }
            _ => {
                use std::io::Read;
                let mut out = Vec::with_capacity(len as usize);
                self.open_range(start, len)?.read_to_end(&mut out).map_err(|e| format!("reading {len} bytes: {e}"))?;
                Ok(out)
            }
        }
    }
}

#[derive(Debug)]
pub enum KvStore {
    Files(Location),
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
                match path.read_if_exists() {
                    Ok(v) => Ok(v),
                    Err(_) if path.is_dir().unwrap_or(false) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Where the value of `key` lies, so that parts of it can be read without reading all of it; `None`
    /// if absent.
    pub fn locate(&self, key: &str) -> Result<Option<ValueLocation>, String> {
        match self {
            KvStore::Ocdbt(db) => Ok(db.location(key.as_bytes()).map(|v| match v {
                ValueRef::Inline(b) => ValueLocation::Inline(b.clone()),
                ValueRef::Indirect { file, offset, length } => {
                    ValueLocation::File { path: db.root().join(file), offset: *offset, length: *length }
                }
            })),
            KvStore::Files(dir) => {
                let path = dir.join(key);
                match path.size() {
                    Ok(Some(length)) => Ok(Some(ValueLocation::File { path, offset: 0, length })),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Where the values live, for messages: the item directory or its OCDBT database.
    pub fn describe(&self) -> String {
        match self {
            KvStore::Files(dir) => format!("plain files under {dir}"),
            KvStore::Ocdbt(db) => format!("the OCDBT database in {}", db.root()),
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

fn list_dirs_with(dir: &Location, file: &str) -> Vec<String> {
    let Ok(entries) = dir.list() else { return vec![] };
    entries
        .into_iter()
        .filter(|e| e.is_dir && dir.join(&e.name).join(file).is_file().unwrap_or(false))
        .map(|e| e.name)
        .collect()
}
