//! Training files in a bucket: [`RangedObject`], parquet's [`ChunkReader`] over ranged reads of a
//! [`Location`], and [`spool`], which streams a JSON-lines / text object into an unlinked local file.
//!
//! Parquet is read the way it is laid out: the footer (the file's last bytes) first, then the byte range
//! of each row group's chunk of the one column used — never the other columns, never the whole object.
//! parquet's page reader asks for a page header at an offset (`get_read`) and then the page (`get_bytes`);
//! those land inside a fetched chunk, so a column chunk costs one request, not two per page.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use crate::storage::{Location, StorageError};

/// Bytes fetched with the footer: enough for the metadata of most files, so opening one is one request.
const TAIL: u64 = 64 << 10;
/// Bytes fetched for a read outside every fetched range (a page header the footer did not announce).
const STRAY: u64 = 64 << 10;

/// A remote file read in ranges; clones share the fetched ranges.
#[derive(Clone)]
pub struct RangedObject {
    inner: Arc<Inner>,
}

struct Inner {
    loc: Location,
    len: u64,
    /// Fetched `(start, bytes)` ranges.
    ranges: Mutex<Vec<(u64, Bytes)>>,
    fetched: AtomicU64,
}

impl RangedObject {
    /// Opens `loc` (one size lookup) and fetches its last [`TAIL`] bytes, which hold the footer.
    pub fn open(loc: &Location) -> Result<RangedObject, StorageError> {
        let len = loc.size()?.ok_or_else(|| StorageError::NotFound { loc: loc.to_string() })?;
        let r = RangedObject {
            inner: Arc::new(Inner { loc: loc.clone(), len, ranges: Mutex::new(vec![]), fetched: AtomicU64::new(0) }),
        };
        let start = len.saturating_sub(TAIL);
        r.fetch(start, len - start)?;
        Ok(r)
    }

    /// Fetches `[start, start + len)` with one ranged read and keeps it for the reads that follow.
    pub fn fetch(&self, start: u64, len: u64) -> Result<Bytes, StorageError> {
        let bytes = Bytes::from(self.inner.loc.read_range(start, len)?);
        self.inner.fetched.fetch_add(len, Ordering::Relaxed);
        self.inner.ranges.lock().unwrap_or_else(|p| p.into_inner()).push((start, bytes.clone()));
        Ok(bytes)
    }

    /// Bytes fetched so far (the footer and the column chunks read).
    pub fn fetched_bytes(&self) -> u64 {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    /// The fetched bytes from `start` to the end of the fetched range holding it (at least `want` bytes).
    fn cached(&self, start: u64, want: u64) -> Option<Bytes> {
        let ranges = self.inner.ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges.iter().find_map(|(s, b)| {
            let end = s + b.len() as u64;
            (*s <= start && start + want <= end).then(|| b.slice((start - s) as usize..))
        })
    }

    fn err(&self, e: StorageError) -> ParquetError {
        ParquetError::External(Box::new(std::io::Error::from(e)))
    }
}

impl Length for RangedObject {
    fn len(&self) -> u64 {
        self.inner.len
    }
}

impl ChunkReader for RangedObject {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        if start > self.inner.len {
            return Err(ParquetError::EOF(format!("read at {start} past the end ({} bytes) of {}", self.inner.len, self.inner.loc)));
        }
        let bytes = match self.cached(start, 1.min(self.inner.len - start)) {
            Some(b) => b,
            None => self.fetch(start, STRAY.min(self.inner.len - start)).map_err(|e| self.err(e))?,
        };
        Ok(bytes.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if start + length as u64 > self.inner.len {
            return Err(ParquetError::EOF(format!("{length} bytes at {start} past the end ({} bytes) of {}", self.inner.len, self.inner.loc)));
        }
        match self.cached(start, length as u64) {
            Some(b) => Ok(b.slice(..length)),
            None => self.fetch(start, length as u64).map_err(|e| self.err(e)),
        }
    }
}

/// Streams `loc` (read-ahead ranged reads) into an unlinked temporary file, which the caller memory-maps
/// like a local training file: documents are then read in shuffled order without a request each, and the
/// copy uses the page cache rather than the heap. The file disappears with its last handle.
pub fn spool(loc: &Location) -> Result<File, StorageError> {
    let io = |op: &'static str, source| StorageError::Io { op, loc: loc.to_string(), source };
    let mut file = tempfile::tempfile().map_err(|e| io("create a local spool file for", e))?;
    let mut reader = loc.open()?;
    std::io::copy(&mut reader, &mut file).map_err(|e| io("copy", e))?;
    Ok(file)
}
