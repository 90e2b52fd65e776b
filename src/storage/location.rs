//! [`Location`]: a local path or a `gs://` object name, and the file operations every caller needs.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{gcs, ObjectWriter, RangeReader, Result, StorageError};

/// A file or directory: a local path, or an object name (a "directory" is a prefix) in a GCS bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Local(PathBuf),
    /// `key` has no leading or trailing `/`; empty for the bucket's root.
    Gcs { bucket: String, key: String },
}

/// One child of a directory: its name and whether it is a directory (a prefix on GCS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Gcs { bucket, key } if key.is_empty() => write!(f, "gs://{bucket}"),
            Location::Gcs { bucket, key } => write!(f, "gs://{bucket}/{key}"),
        }
    }
}

impl Location {
    /// `gs://bucket/prefix` or a local path. Other URL schemes are refused by name rather than taken as a
    /// local directory called `s3:`.
    pub fn parse(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("gs://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StorageError::BadPath { path: s.into(), reason: "no bucket name after gs://".into() });
            }
            if !bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)) {
                return Err(StorageError::BadPath {
                    path: s.into(),
                    reason: format!("{bucket:?} is not a valid bucket name (lowercase letters, digits, - _ .)"),
                });
            }
            let key = key.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/");
            return Ok(Location::Gcs { bucket: bucket.into(), key });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
                return Err(StorageError::BadPath {
                    path: s.into(),
                    reason: format!("{scheme}:// is not supported; use a local path or gs://bucket/prefix"),
                });
            }
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// `self/rel`; `rel` may hold several `/`-separated parts.
    pub fn join(&self, rel: impl AsRef<str>) -> Location {
        let rel = rel.as_ref();
        match self {
            Location::Local(p) => Location::Local(p.join(rel)),
            Location::Gcs { bucket, key } => {
                let parts = key.split('/').chain(rel.split('/')).filter(|p| !p.is_empty());
                Location::Gcs { bucket: bucket.clone(), key: parts.collect::<Vec<_>>().join("/") }
            }
        }
    }

    pub fn parent(&self) -> Option<Location> {
        match self {
            Location::Local(p) => p.parent().map(|p| Location::Local(p.to_path_buf())),
            Location::Gcs { key, .. } if key.is_empty() => None,
            Location::Gcs { bucket, key } => {
                let parent = key.rsplit_once('/').map_or("", |(p, _)| p);
                Some(Location::Gcs { bucket: bucket.clone(), key: parent.into() })
            }
        }
    }

    /// The last component (`None` for a bucket's root or `/`).
    pub fn file_name(&self) -> Option<String> {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Location::Gcs { key, .. } => key.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_owned),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Gcs { .. })
    }

    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Gcs { .. } => None,
        }
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StorageError::NotFound { loc: self.to_string() }
            } else if source.kind() == std::io::ErrorKind::PermissionDenied {
                StorageError::Denied { loc: self.to_string(), detail: source.to_string() }
            } else {
                StorageError::Io { op, loc: self.to_string(), source }
            }
        }
    }

    /// The whole file.
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Location::Local(p) => std::fs::read(p).map_err(self.io_err("read")),
            Location::Gcs { bucket, key } => gcs::read(bucket, key, None),
        }
    }

    /// The whole file, `None` when it does not exist.
    pub fn read_if_exists(&self) -> Result<Option<Vec<u8>>> {
        match self.read() {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn read_to_string(&self) -> Result<String> {
        String::from_utf8(self.read()?).map_err(|e| StorageError::Remote {
            op: "read",
            loc: self.to_string(),
            detail: format!("not UTF-8 text: {e}"),
        })
    }

    /// Bytes `[offset, offset + len)` of the file; only those bytes are read (a ranged GET on GCS).
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let out = match self {
            Location::Local(p) => {
                let mut f = std::fs::File::open(p).map_err(self.io_err("open"))?;
                f.seek(SeekFrom::Start(offset)).map_err(self.io_err("seek in"))?;
                let mut out = Vec::with_capacity(len as usize);
                f.take(len).read_to_end(&mut out).map_err(self.io_err("read"))?;
                out
            }
            Location::Gcs { bucket, key } if len == 0 => {
                gcs::size(bucket, key)?.ok_or_else(|| StorageError::NotFound { loc: self.to_string() })?;
                vec![]
            }
            Location::Gcs { bucket, key } => gcs::read(bucket, key, Some(offset..offset + len))?,
        };
        if out.len() as u64 != len {
            return Err(StorageError::Remote {
                op: "read",
                loc: self.to_string(),
                detail: format!("asked for bytes {offset}..{} and got {} bytes: the file is shorter than expected (truncated?)", offset + len, out.len()),
            });
        }
        Ok(out)
    }

    /// A reader over the file that fetches it in ranges ahead of the caller (read-ahead on GCS).
    pub fn open(&self) -> Result<RangeReader> {
        RangeReader::open(self.clone())
    }

    /// The size of the file, `None` when there is no such file (a directory is not a file).
    pub fn size(&self) -> Result<Option<u64>> {
        match self {
            Location::Local(p) => match std::fs::metadata(p) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io_err("stat")(e)),
            },
            Location::Gcs { bucket, key } => gcs::size(bucket, key),
        }
    }

    pub fn is_file(&self) -> Result<bool> {
        Ok(self.size()?.is_some())
    }

    /// A directory on GCS is any prefix with an object under it.
    pub fn is_dir(&self) -> Result<bool> {
        match self {
            Location::Local(p) => Ok(p.is_dir()),
            Location::Gcs { bucket, key } => gcs::has_children(bucket, key),
        }
    }

    /// The children of a directory, sorted by name; empty when it does not exist.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = match self {
            Location::Local(p) => {
                let rd = match std::fs::read_dir(p) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                    Err(e) => return Err(self.io_err("list")(e)),
                };
                let mut out = vec![];
                for e in rd {
                    let e = e.map_err(self.io_err("list"))?;
                    let Ok(name) = e.file_name().into_string() else { continue };
                    out.push(Entry { is_dir: e.path().is_dir(), name });
                }
                out
            }
            Location::Gcs { bucket, key } => gcs::list(bucket, key)?,
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every file under this directory, as paths relative to it (`/`-separated), with sizes; sorted.
    pub fn walk(&self) -> Result<Vec<(String, u64)>> {
        let mut out = match self {
            Location::Local(p) => {
                let mut out = vec![];
                let mut stack = vec![(p.clone(), String::new())];
                while let Some((dir, rel)) = stack.pop() {
                    for e in Location::Local(dir.clone()).list()? {
                        let r = if rel.is_empty() { e.name.clone() } else { format!("{rel}/{}", e.name) };
                        if e.is_dir {
                            stack.push((dir.join(&e.name), r));
                        } else {
                            let len = std::fs::metadata(dir.join(&e.name)).map_err(self.io_err("stat"))?.len();
                            out.push((r, len));
                        }
                    }
                }
                out
            }
            Location::Gcs { bucket, key } => gcs::walk(bucket, key)?,
        };
        out.sort();
        Ok(out)
    }

    /// Files matching a glob (`*`, `?`, `[...]`, `**`), sorted. On GCS the listing starts at the longest
    /// prefix without a wildcard.
    pub fn glob(pattern: &str) -> Result<Vec<Location>> {
        match Location::parse(pattern)? {
            Location::Local(_) => {
                let paths = glob::glob(pattern).map_err(|e| StorageError::BadPath { path: pattern.into(), reason: e.to_string() })?;
                let mut out: Vec<Location> =
                    paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).map(Location::Local).collect();
                out.sort();
                Ok(out)
            }
            Location::Gcs { bucket, key } => {
                let fixed = key.find(['*', '?', '[']).map_or(key.as_str(), |i| &key[..i]);
                let dir = fixed.rsplit_once('/').map_or("", |(d, _)| d);
                let matcher = glob::Pattern::new(&key).map_err(|e| StorageError::BadPath { path: pattern.into(), reason: e.to_string() })?;
                let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
                let mut out = vec![];
                for (rel, _) in gcs::walk(&bucket, dir)? {
                    let full = if dir.is_empty() { rel } else { format!("{dir}/{rel}") };
                    if matcher.matches_with(&full, opts) {
                        out.push(Location::Gcs { bucket: bucket.clone(), key: full });
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Writes the whole file (creating parent directories locally), replacing what was there.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        match self {
            Location::Local(p) => {
                if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d).map_err(self.io_err("create the directory of"))?;
                }
                let mut f = std::fs::File::create(p).map_err(self.io_err("create"))?;
                f.write_all(bytes).map_err(self.io_err("write"))?;
                f.sync_all().map_err(self.io_err("sync"))
            }
            Location::Gcs { bucket, key } => gcs::write(bucket, key, bytes.to_vec()),
        }
    }

    /// A streaming writer for a new file (a resumable upload on GCS, sent while the caller writes).
    /// Nothing is visible under this name until [`ObjectWriter::finish`] returns.
    pub fn create(&self) -> Result<ObjectWriter> {
        ObjectWriter::create(self.clone())
    }

    /// Makes the directory (nothing to do on GCS, where directories are prefixes).
    pub fn create_dir_all(&self) -> Result<()> {
        match self {
            Location::Local(p) => std::fs::create_dir_all(p).map_err(self.io_err("create directory")),
            Location::Gcs { .. } => Ok(()),
        }
    }

    /// Deletes the file or the whole directory; absent is fine.
    pub fn remove_all(&self) -> Result<()> {
        match self {
            Location::Local(p) => {
                let r = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
                match r {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_err("delete")(e)),
                    _ => Ok(()),
                }
            }
            Location::Gcs { bucket, key } => gcs::remove_all(bucket, key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gcs_paths_and_refuses_other_schemes() {
        let l = Location::parse("gs://bk/run//ckpt/0/items/").unwrap();
        assert_eq!(l, Location::Gcs { bucket: "bk".into(), key: "run/ckpt/0/items".into() });
        assert_eq!(l.to_string(), "gs://bk/run/ckpt/0/items");
        assert_eq!(l.parent().unwrap().to_string(), "gs://bk/run/ckpt/0");
        assert_eq!(l.file_name().as_deref(), Some("items"));
        assert_eq!(l.join("a/b").to_string(), "gs://bk/run/ckpt/0/items/a/b");
        assert_eq!(Location::parse("gs://bk").unwrap().to_string(), "gs://bk");
        assert!(Location::parse("gs://bk").unwrap().parent().is_none());
        assert!(Location::parse("gs:///x").is_err());
        assert!(Location::parse("gs://Bad_Bucket!/x").is_err());
        let e = Location::parse("s3://bk/x").unwrap_err().to_string();
        assert!(e.contains("s3:// is not supported"), "{e}");
        assert_eq!(Location::parse("out/run").unwrap(), Location::Local("out/run".into()));
    }

    #[test]
    fn local_files_read_write_list_and_glob() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::Local(dir.path().into());
        root.join("a/b.txt").write(b"hello world").unwrap();
        root.join("a/c.jsonl").write(b"{}").unwrap();
        assert_eq!(root.join("a/b.txt").read_range(6, 5).unwrap(), b"world");
        assert!(root.join("a/b.txt").read_range(6, 50).unwrap_err().to_string().contains("truncated"));
        assert!(root.join("nope").read().unwrap_err().is_not_found());
        assert_eq!(root.join("a/b.txt").size().unwrap(), Some(11));
        assert_eq!(root.join("a").size().unwrap(), None);
        assert_eq!(root.list().unwrap(), vec![Entry { name: "a".into(), is_dir: true }]);
        assert_eq!(root.walk().unwrap(), vec![("a/b.txt".into(), 11), ("a/c.jsonl".into(), 2)]);
        let pat = format!("{}/a/*.jsonl", dir.path().display());
        assert_eq!(Location::glob(&pat).unwrap(), vec![root.join("a/c.jsonl")]);
        let mut w = root.join("s/big").create().unwrap();
        w.write_all(&[7u8; 100_000]).unwrap();
        w.finish().unwrap();
        let mut r = root.join("s/big").open().unwrap();
        let mut all = vec![];
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, vec![7u8; 100_000]);
        root.join("a").remove_all().unwrap();
        assert!(!root.join("a").is_dir().unwrap());
    }
}
