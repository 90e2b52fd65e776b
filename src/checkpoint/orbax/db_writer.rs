//! The OCDBT side of the checkpoint writer: each process's database (data files `d/<hex>`, B+tree,
//! manifest) and the merged top-level root over all of them, plus the small file helpers the writer
//! shares. Split from `writer.rs`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::{Location, ObjectWriter};

use super::zarr3::encode_orbax_shard;
use super::ocdbt::{OcdbtConfig, OcdbtDatabase, ValueRef, MANIFEST_FILE};
use super::ocdbt_write::{encode_manifest, write_tree, EntryValue, FileName, NodeSink, LEAF_ENTRIES};
use super::{write_err, OrbaxError, Result};

/// The process database plus the merged top-level root (see the module docs).
pub(super) struct DbWriter {
    dir: Location,
    target: u64,
    /// Data files of the process database (`d/<hex>` relative to `dir`), the last one open for appending.
    files: Vec<String>,
    current: Option<(ObjectWriter, u64)>,
    entries: Vec<(Vec<u8>, EntryValue)>,
}

impl DbWriter {
    pub(super) fn new(dir: &Location, target: u64) -> DbWriter {
        DbWriter { dir: dir.clone(), target, files: vec![], current: None, entries: vec![] }
    }

    fn open_file(&mut self) -> Result<()> {
        self.close_file()?;
        let rel = format!("d/{}", hex(&random_bytes::<16>()));
        let path = self.dir.join(&rel);
        let f = path.create().map_err(write_err(&path))?;
        self.files.push(rel);
        self.current = Some((f, 0));
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        if let Some((w, _)) = self.current.take() {
            let path = self.dir.join(self.files.last().unwrap());
            w.finish().map_err(write_err(&path))?;
        }
        Ok(())
    }

    fn append_value(&mut self, bytes: &[u8]) -> Result<(usize, u64)> {
        let full = matches!(&self.current, Some((_, off)) if *off > 0 && off + bytes.len() as u64 > self.target);
        if self.current.is_none() || full {
            self.open_file()?;
        }
        let path = self.dir.join(self.files.last().unwrap());
        let (w, off) = self.current.as_mut().unwrap();
        w.write_all(bytes).map_err(|e| io_write_err(&path, e))?;
        let at = *off;
        *off += bytes.len() as u64;
        Ok((self.files.len() - 1, at))
    }

    /// A zarr3 chunk as orbax encodes it ([`encode_orbax_shard`]: one zstd frame, then the shard index and
    /// its crc32c). Large chunks are compressed straight into the data file, so a multi-GB array never has
    /// a compressed copy in memory.
    pub(super) fn put_shard(&mut self, key: String, raw: &[u8], zstd_level: i32) -> Result<()> {
        if raw.len() < STREAM_CHUNKS_FROM {
            return self.put(key, encode_orbax_shard(raw, zstd_level));
        }
        let full = matches!(&self.current, Some((_, off)) if *off > 0 && off + raw.len() as u64 > self.target);
        if self.current.is_none() || full {
            self.open_file()?;
        }
        let path = self.dir.join(self.files.last().unwrap());
        let (w, off) = self.current.as_mut().unwrap();
        let mut counted = CountingWriter { inner: w, count: 0 };
        let io = |e: std::io::Error| io_write_err(&path, e);
        let mut enc = zstd::stream::Encoder::new(&mut counted, zstd_level).map_err(io)?;
        // Content size in the frame header, as zstd's one-shot compression (and tensorstore) writes it.
        enc.include_contentsize(true).map_err(io)?;
        enc.set_pledged_src_size(Some(raw.len() as u64)).map_err(io)?;
        enc.write_all(raw).map_err(io)?;
        enc.finish().map_err(io)?;
        let compressed = counted.count;
        let mut index = Vec::with_capacity(20);
        index.extend(0u64.to_le_bytes());
        index.extend(compressed.to_le_bytes());
        let crc = super::codec::crc32c(&index);
        index.extend(crc.to_le_bytes());
        w.write_all(&index).map_err(io)?;
        let at = *off;
        let length = compressed + index.len() as u64;
        *off += length;
        self.entries.push((key.into_bytes(), EntryValue::Indirect { file: self.files.len() - 1, offset: at, length }));
        Ok(())
    }

    /// Values up to 1024 bytes (orbax's `max_inline_value_bytes`) stay inline in the B+tree leaf.
    pub(super) fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        let v = if value.len() <= 1024 {
            EntryValue::Inline(value)
        } else {
            let (file, offset) = self.append_value(&value)?;
            EntryValue::Indirect { file, offset, length: value.len() as u64 }
        };
        self.entries.push((key.into_bytes(), v));
        Ok(())
    }

    /// Writes the process database's tree (after the values in its last data file) and its manifest, and
    /// returns what the merged root needs of it.
    pub(super) fn finish(mut self) -> Result<ProcessDb> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let config = db_config();
        if self.current.is_none() {
            self.open_file()?;
        }
        let proc_files: Vec<FileName> =
            self.files.iter().map(|f| FileName { base: vec![], rel: f.clone().into_bytes() }).collect();
        let entries = std::mem::take(&mut self.entries);
        let root = write_tree(&entries, &proc_files, &mut self, config.zstd_level, LEAF_ENTRIES)
            .map_err(|e| io_write_err(&self.dir, e))?;
        let node_file = proc_files.last().unwrap().clone();
        self.close_file()?;
        let manifest = encode_manifest(&config, &node_file, root.as_ref(), 1, now_ns());
        write_file(&self.dir.join(MANIFEST_FILE), &manifest)?;
        Ok(ProcessDb { files: std::mem::take(&mut self.files), entries })
    }
}

/// The settings of every database the writer makes (tensorstore's defaults as orbax opens them).
fn db_config() -> OcdbtConfig {
    OcdbtConfig {
        uuid: random_bytes::<16>(),
        max_inline_value_bytes: 1024,
        max_decoded_node_bytes: 100_000_000,
        version_tree_arity_log2: 4,
        zstd_level: Some(0),
    }
}

/// One process's finished database: its data files (relative to its directory) and every key's value,
/// `Indirect` values indexing `files`.
pub(super) struct ProcessDb {
    files: Vec<String>,
    entries: Vec<(Vec<u8>, EntryValue)>,
}

impl ProcessDb {
    /// Reads back the database another process wrote in `dir` (`ocdbt.process_<p>`), as orbax's primary
    /// process does before merging.
    pub(super) fn read(dir: &Location) -> Result<ProcessDb> {
        let db = OcdbtDatabase::open(dir.clone())?;
        let mut files: Vec<String> = Vec::new();
        let mut entries = Vec::with_capacity(db.len());
        for key in db.keys() {
            let v = match db.location(key).expect("listed key") {
                ValueRef::Inline(bytes) => EntryValue::Inline(bytes.clone()),
                ValueRef::Indirect { file, offset, length } => {
                    let i = files.iter().position(|f| f == file).unwrap_or_else(|| {
                        files.push(file.clone());
                        files.len() - 1
                    });
                    EntryValue::Indirect { file: i, offset: *offset, length: *length }
                }
            };
            entries.push((key.to_vec(), v));
        }
        Ok(ProcessDb { files, entries })
    }
}

/// The directory of process `p`'s database inside an item (orbax's name).
pub(super) fn process_dir_name(p: usize) -> String {
    format!("ocdbt.process_{p}")
}

/// Writes the merged top-level root of an item: `items/manifest.ocdbt` and one tree in `items/d/`, holding
/// every process's keys; out-of-line values point into the process files through base paths
/// `ocdbt.process_<p>/`. `dbs` are (process index, database); a key in two databases is an error.
pub(super) fn write_merged_root(items: &Location, dbs: &[(usize, ProcessDb)]) -> Result<()> {
    let mut top_files: Vec<FileName> = Vec::new();
    let mut entries: Vec<(Vec<u8>, EntryValue)> = Vec::new();
    for (p, db) in dbs {
        let first = top_files.len();
        let base = format!("{}/", process_dir_name(*p)).into_bytes();
        top_files.extend(db.files.iter().map(|f| FileName { base: base.clone(), rel: f.clone().into_bytes() }));
        entries.extend(db.entries.iter().map(|(k, v)| {
            let v = match v {
                EntryValue::Indirect { file, offset, length } => EntryValue::Indirect { file: first + file, offset: *offset, length: *length },
                inline => inline.clone(),
            };
            (k.clone(), v)
        }));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        let reason = format!("key {} was written by two processes", String::from_utf8_lossy(&w[0].0));
        return Err(OrbaxError::Ocdbt { path: items.clone(), reason });
    }
    let top_rel = format!("d/{}", hex(&random_bytes::<16>()));
    top_files.push(FileName { base: vec![], rel: top_rel.clone().into_bytes() });
    let mut node_bytes = Vec::new();
    let mut sink = super::ocdbt_write::VecSink { file: top_files.len() - 1, buf: &mut node_bytes };
    let config = db_config();
    let root = write_tree(&entries, &top_files, &mut sink, config.zstd_level, LEAF_ENTRIES).map_err(|e| io_write_err(items, e))?;
    write_file(&items.join(&top_rel), &node_bytes)?;
    let manifest = encode_manifest(&config, top_files.last().unwrap(), root.as_ref(), 1, now_ns());
    write_file(&items.join(MANIFEST_FILE), &manifest)
}

impl NodeSink for DbWriter {
    fn file(&self) -> usize {
        self.files.len() - 1
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        let (w, off) = self.current.as_mut().expect("a data file is open");
        w.write_all(bytes)?;
        let at = *off;
        *off += bytes.len() as u64;
        Ok(at)
    }
}

/// Chunks from this size on are compressed straight into the data file (smaller ones may stay inline).
const STREAM_CHUNKS_FROM: usize = 1 << 20;

/// Counts the bytes written through it.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes (and, locally, fsyncs) one whole file.
pub(super) fn write_file(path: &Location, bytes: &[u8]) -> Result<()> {
    path.write(bytes).map_err(write_err(path))
}

/// Makes a local directory's entries durable; GCS objects are durable once their upload completes.
pub(super) fn sync_dir(dir: &Location) -> Result<()> {
    match dir.as_local() {
        Some(p) => std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| io_write_err(dir, e)),
        None => Ok(()),
    }
}

fn io_write_err(path: &Location, e: std::io::Error) -> OrbaxError {
    OrbaxError::Write { path: path.clone(), source: crate::storage::StorageError::Io { op: "write", loc: path.to_string(), source: e } }
}

pub(super) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Random bytes for database ids and file names (uniqueness, not secrecy): std's per-process random hash
/// keys mixed with the time and a counter.
pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_ns());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
    out
}

