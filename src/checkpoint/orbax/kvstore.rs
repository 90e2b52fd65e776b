//! The key-value view of an item directory: zarr keys (`<name>/.zarray`, `<name>/c/0/0`, ...) stored either
//! as plain files under the directory or inside its OCDBT database.

use std::path::{Path, PathBuf};

use super::ocdbt::{OcdbtDatabase, ValueRef};

/// Where one value lies: inline (small values in the OCDBT tree) or a byte range of a file.
#[derive(Clone, Debug)]
pub enum ValueLocation {
    Inline(Vec<u8>),
    File { path: PathBuf, offset: u64, length: u64 },
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
            ValueLocation::File { path, offset, .. } => {
                let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                f.seek(SeekFrom::Start(offset + start)).map_err(|e| format!("cannot seek in {}: {e}", path.display()))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f.take(len))))
            }
        }
    }

    /// Bytes `[start, start + len)` of the value.
    pub fn read_range(&self, start: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(len as usize);
        self.open_range(start, len)?.read_to_end(&mut out).map_err(|e| format!("reading {len} bytes: {e}"))?;
        if out.len() as u64 != len {
            return Err(format!("value ended after {} of {len} bytes", out.len()));
        }
        Ok(out)
    }
}

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
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => Ok(Some(ValueLocation::File { path, offset: 0, length: m.len() })),
                    Ok(_) => Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
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
