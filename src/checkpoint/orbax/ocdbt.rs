//! OCDBT (tensorstore's "optionally-cooperative distributed B+tree") key-value databases: the reader.
//!
//! No Rust crate implements OCDBT, so the format is decoded here by hand, after tensorstore's
//! `kvstore/ocdbt/index.rst` as summarised in `orbax-format.md` §6: a manifest (`manifest.ocdbt`) names the
//! latest version's root B+tree node; nodes and out-of-line values sit at byte ranges of data files
//! (`d/<hex>`, possibly under base paths such as `ocdbt.process_0/`). Every envelope carries a magic, its
//! length and a crc32c, and its body may be one zstd frame.
//!
//! `OcdbtDatabase::open` walks the whole tree once and keeps, per key, either the inline value (small) or
//! where the value lies; values stored out of line are read only when asked for.

use std::collections::BTreeMap;
use super::codec::{crc32c, zstd_decode};
use super::{OrbaxError, Result};
use crate::storage::Location;

pub const MANIFEST_MAGIC: u32 = 0x0CDB_3A2A;
pub const VERSION_NODE_MAGIC: u32 = 0x0CDB_1234;
pub const BTREE_NODE_MAGIC: u32 = 0x0CDB_20DE;
pub const MANIFEST_FILE: &str = "manifest.ocdbt";
/// Inline values above this are rejected on read (tensorstore's limit, whatever the config says).
const MAX_INLINE_READ: u64 = 1 << 20;
const MAX_NODE_ENTRIES: u64 = 1 << 20;

/// Where a value lives.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueRef {
    Inline(Vec<u8>),
    /// `length` bytes at `offset` of `file` (a path relative to the database root).
    Indirect {
        file: String,
        offset: u64,
        length: u64,
    },
}

/// The database-wide settings from the manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct OcdbtConfig {
    pub uuid: [u8; 16],
    pub max_inline_value_bytes: u64,
    pub max_decoded_node_bytes: u64,
    pub version_tree_arity_log2: u8,
    /// `None` = uncompressed nodes; `Some(level)` = zstd.
    pub zstd_level: Option<i32>,
}

/// The latest version of an OCDBT database, with every key's value location.
#[derive(Debug)]
pub struct OcdbtDatabase {
    root: Location,
    pub config: OcdbtConfig,
    pub generation: u64,
    entries: BTreeMap<Vec<u8>, ValueRef>,
}

impl OcdbtDatabase {
    /// Opens the database rooted at `root` (the directory holding `manifest.ocdbt`).
    pub fn open(root: impl Into<Location>) -> Result<OcdbtDatabase> {
        let root: Location = root.into();
        let manifest_path = root.join(MANIFEST_FILE);
        let buf = manifest_path.read().map_err(super::io_err(&manifest_path))?;
        let bad = |reason: String| OrbaxError::Ocdbt { path: manifest_path.clone(), reason };
        let body = open_envelope(&buf, MANIFEST_MAGIC).map_err(bad)?;
        let mut c = Cursor::new(&body);
        let manifest = parse_manifest(&mut c).map_err(bad)?;
        let mut db = OcdbtDatabase {
            root,
            config: manifest.config,
            generation: manifest.latest.generation,
            entries: BTreeMap::new(),
        };
        let v = manifest.latest;
        if !(v.offset == u64::MAX && v.length == u64::MAX) {
            db.walk(&v.file, v.offset, v.length, v.root_height, &[])?;
        }
        Ok(db)
    }

    pub fn root(&self) -> &Location {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.keys().map(|k| k.as_slice())
    }

    pub fn location(&self, key: &[u8]) -> Option<&ValueRef> {
        self.entries.get(key)
    }

    /// The value of `key`, reading it from its data file if it is stored out of line. The error names the
    /// data file; the caller adds the key's meaning.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(ValueRef::Inline(v)) => Ok(Some(v.clone())),
            Some(ValueRef::Indirect { file, offset, length }) => {
                read_range(&self.root.join(file), *offset, *length).map(Some)
            }
        }
    }

    fn walk(&mut self, file: &DataFile, offset: u64, length: u64, height: u8, prefix: &[u8]) -> Result<()> {
        let path = self.root.join(file.path()?);
        let bad = |reason: String| OrbaxError::Ocdbt { path: path.clone(), reason };
        let raw = read_range(&path, offset, length).map_err(|e| bad(format!("B+tree node: {e}")))?;
        let body =
            open_envelope(&raw, BTREE_NODE_MAGIC).map_err(|e| bad(format!("B+tree node at offset {offset}: {e}")))?;
        let node = parse_btree_node(&body, &file.transitive())
            .map_err(|e| bad(format!("B+tree node at offset {offset}: {e}")))?;
        if node.height != height {
            return Err(bad(format!("B+tree node at offset {offset} has height {}, expected {height}", node.height)));
        }
        match node.body {
            NodeBody::Leaf(values) => {
                for (key, value) in node.keys.into_iter().zip(values) {
                    let mut full = prefix.to_vec();
                    full.extend_from_slice(&key);
                    let value = match value {
                        LeafValue::Inline(v) => ValueRef::Inline(v),
                        LeafValue::Indirect { file, offset, length } => {
                            ValueRef::Indirect { file: file.path()?, offset, length }
                        }
                    };
                    self.entries.insert(full, value);
                }
            }
            NodeBody::Interior(children) => {
                for (key, child) in node.keys.iter().zip(children) {
                    let scp = child.subtree_common_prefix_length as usize;
                    if scp > key.len() {
                        return Err(bad("subtree common prefix longer than its key".into()));
                    }
                    let mut child_prefix = prefix.to_vec();
                    child_prefix.extend_from_slice(&key[..scp]);
                    self.walk(&child.file, child.offset, child.length, height - 1, &child_prefix)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads `length` bytes at `offset` of `path`, saying plainly when the file is too short.
pub fn read_range(path: &Location, offset: u64, length: u64) -> Result<Vec<u8>, String> {
    offset.checked_add(length).ok_or_else(|| format!("bad byte range at {offset}+{length}"))?;
    path.read_range(offset, length).map_err(|e| e.to_string())
}

/// Checks magic, length and crc32c of an envelope and returns its (decompressed) body.
pub fn open_envelope(buf: &[u8], magic: u32) -> Result<Vec<u8>, String> {
    if buf.len() < 16 {
        return Err(format!("{} bytes is too short for an OCDBT envelope", buf.len()));
    }
    let m = u32::from_be_bytes(buf[0..4].try_into().unwrap());
    if m != magic {
        return Err(format!("bad magic {m:#010x} (expected {magic:#010x})"));
    }
    let len = u64::from_le_bytes(buf[4..12].try_into().unwrap());
    if len != buf.len() as u64 {
        return Err(format!("header says {len} bytes, but there are {}", buf.len()));
    }
    let (head, tail) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap());
    let actual = crc32c(head);
    if stored != actual {
        return Err(format!("crc32c mismatch (stored {stored:#010x}, computed {actual:#010x})"));
    }
    let mut c = Cursor::new(&head[12..]);
    let version = c.varint()?;
    if version != 0 {
        return Err(format!("format version {version} (only 0 exists)"));
    }
    let compression = c.varint()?;
    let rest = &head[12 + c.pos..];
    match compression {
        0 => Ok(rest.to_vec()),
        1 => zstd_decode(rest),
        other => Err(format!("unknown compression {other}")),
    }
}

// ------------------------------------------------------------------------------------------------ cursor

pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("truncated (expected a byte)")?;
        self.pos += 1;
        Ok(v)
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let x = self.u8()?;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    pub fn bytes(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflows")?;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("truncated")?;
        let v = &self.b[self.pos..end];
        self.pos = end;
        Ok(v)
    }

    pub fn u64le(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }

    pub fn i32le(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    fn column(&mut self, n: usize) -> Result<Vec<u64>, String> {
        (0..n).map(|_| self.varint()).collect()
    }
}

// ------------------------------------------------------------------------------------------------ structures

/// A data file reached through a table entry: its full base path (transitive + base) and relative path.
#[derive(Clone, Debug)]
struct DataFile {
    base: Vec<u8>,
    rel: Vec<u8>,
}

impl DataFile {
    fn path(&self) -> Result<String> {
        let mut p = self.base.clone();
        p.extend_from_slice(&self.rel);
        let s = String::from_utf8(p).map_err(|_| OrbaxError::Ocdbt {
            path: Location::Local("<data file table>".into()),
            reason: "data file path is not UTF-8".into(),
        })?;
        if s.starts_with('/') || s.split('/').any(|c| c == "..") {
            return Err(OrbaxError::Ocdbt {
                path: Location::Local(s.clone().into()),
                reason: "data file path leaves the database directory".into(),
            });
        }
        Ok(s)
    }

    /// The transitive path for the table of a node reached through this file.
    fn transitive(&self) -> Vec<u8> {
        self.base.clone()
    }
}

fn parse_data_file_table(c: &mut Cursor, transitive: &[u8]) -> Result<Vec<DataFile>, String> {
    let n = c.varint()? as usize;
    if n > 1 << 24 {
        return Err(format!("data file table claims {n} files"));
    }
    let mut prefix = vec![0u64];
    if n > 1 {
        prefix.extend(c.column(n - 1)?);
    }
    let suffix = c.column(n)?;
    let base_len = c.column(n)?;
    let mut files = Vec::with_capacity(n);
    let mut prev: Vec<u8> = Vec::new();
    for i in 0..n {
        let p = prefix[i] as usize;
        if p > prev.len() {
            return Err("data file path prefix longer than the previous path".into());
        }
        let mut path = prev[..p].to_vec();
        path.extend_from_slice(c.bytes(suffix[i])?);
        let b = base_len[i] as usize;
        if b > path.len() {
            return Err("data file base path longer than the path".into());
        }
        let mut base = transitive.to_vec();
        base.extend_from_slice(&path[..b]);
        files.push(DataFile { base, rel: path[b..].to_vec() });
        prev = path;
    }
    Ok(files)
}

fn file_at(files: &[DataFile], id: u64) -> Result<DataFile, String> {
    files.get(id as usize).cloned().ok_or_else(|| format!("data file id {id} out of range ({} files)", files.len()))
}

struct Manifest {
    config: OcdbtConfig,
    latest: VersionEntry,
}

struct VersionEntry {
    generation: u64,
    root_height: u8,
    file: DataFile,
    offset: u64,
    length: u64,
}

fn parse_manifest(c: &mut Cursor) -> Result<Manifest, String> {
    let uuid: [u8; 16] = c.bytes(16)?.try_into().unwrap();
    let kind = c.u8()?;
    let max_inline_value_bytes = c.varint()?;
    let max_decoded_node_bytes = c.varint()?;
    let version_tree_arity_log2 = c.u8()?;
    let zstd_level = match c.varint()? {
        0 => None,
        1 => Some(c.i32le()?),
        m => return Err(format!("unknown compression method {m} in the config")),
    };
    let config =
        OcdbtConfig { uuid, max_inline_value_bytes, max_decoded_node_bytes, version_tree_arity_log2, zstd_level };
    if kind != 0 {
        return Err(format!(
            "manifest kind {kind} (numbered manifests) is not supported; orbax always writes kind 0 (single)"
        ));
    }
    let files = parse_data_file_table(c, b"")?;
    // Inline versions (a version-tree leaf entry array); the newest is last.
    let n = c.varint()? as usize;
    if n == 0 || n > 1 << 16 {
        return Err(format!("{n} inline versions"));
    }
    let generation = c.column(n)?;
    let root_height = (0..n).map(|_| c.u8()).collect::<Result<Vec<_>, _>>()?;
    let file_id = c.column(n)?;
    let offset = c.column(n)?;
    let length = c.column(n)?;
    for _ in 0..3 * n {
        c.varint()?; // num_keys, num_tree_bytes, num_indirect_value_bytes: statistics only
    }
    for _ in 0..n {
        c.u64le()?; // commit_time
    }
    // Older versions (version_tree_nodes, with entry_height): not needed to read the latest version.
    let m = c.varint()? as usize;
    if m > 64 {
        return Err(format!("{m} version tree nodes"));
    }
    for _ in 0..5 * m {
        c.varint()?;
    }
    for _ in 0..m {
        c.u64le()?;
        c.u8()?;
    }
    if !c.at_end() {
        return Err("trailing bytes after the version tree".into());
    }
    let last = n - 1;
    let (offset, length) = (offset[last], length[last]);
    let file = if offset == u64::MAX && length == u64::MAX {
        DataFile { base: vec![], rel: vec![] }
    } else {
        file_at(&files, file_id[last])?
    };
    Ok(Manifest {
        config,
        latest: VersionEntry { generation: generation[last], root_height: root_height[last], file, offset, length },
    })
}

struct BtreeNode {
    height: u8,
    keys: Vec<Vec<u8>>,
    body: NodeBody,
}

enum NodeBody {
    Leaf(Vec<LeafValue>),
    Interior(Vec<ChildRef>),
}

enum LeafValue {
    Inline(Vec<u8>),
    Indirect { file: DataFile, offset: u64, length: u64 },
}

struct ChildRef {
    file: DataFile,
    offset: u64,
    length: u64,
    subtree_common_prefix_length: u64,
}

fn parse_btree_node(buf: &[u8], transitive: &[u8]) -> Result<BtreeNode, String> {
    let mut c = Cursor::new(buf);
    let height = c.u8()?;
    let files = parse_data_file_table(&mut c, transitive)?;
    let n = c.varint()?;
    if n == 0 || n > MAX_NODE_ENTRIES {
        return Err(format!("{n} entries"));
    }
    let n = n as usize;
    let mut prefix = vec![0u64];
    prefix.extend(c.column(n - 1)?);
    let suffix = c.column(n)?;
    let scp = if height > 0 { c.column(n)? } else { vec![] };
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        let p = prefix[i] as usize;
        let prev = keys.last().map(|k| k.as_slice()).unwrap_or(&[]);
        if p > prev.len() {
            return Err("key prefix longer than the previous key".into());
        }
        let mut k = prev[..p].to_vec();
        k.extend_from_slice(c.bytes(suffix[i])?);
        if i > 0 && k.as_slice() <= prev {
            return Err("keys are not strictly increasing".into());
        }
        keys.push(k);
    }
    let body = if height == 0 {
        let lengths = c.column(n)?;
        let kinds = (0..n).map(|_| c.u8()).collect::<Result<Vec<_>, _>>()?;
        let n_ind = kinds.iter().filter(|k| **k == 1).count();
        let ids = c.column(n_ind)?;
        let offs = c.column(n_ind)?;
        let mut ind = ids.into_iter().zip(offs);
        let mut values = Vec::with_capacity(n);
        for (len, kind) in lengths.iter().zip(&kinds) {
            values.push(match kind {
                0 => {
                    if *len > MAX_INLINE_READ {
                        return Err(format!("inline value of {len} bytes (limit {MAX_INLINE_READ})"));
                    }
                    LeafValue::Inline(Vec::new())
                }
                1 => {
                    let (id, offset) = ind.next().unwrap();
                    LeafValue::Indirect { file: file_at(&files, id)?, offset, length: *len }
                }
                k => return Err(format!("unknown value kind {k}")),
            });
        }
        for (v, len) in values.iter_mut().zip(&lengths) {
            if let LeafValue::Inline(buf) = v {
                *buf = c.bytes(*len)?.to_vec();
            }
        }
        NodeBody::Leaf(values)
    } else {
        let ids = c.column(n)?;
        let offs = c.column(n)?;
        let lens = c.column(n)?;
        c.column(3 * n)?; // num_keys, num_tree_bytes, num_indirect_value_bytes
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            children.push(ChildRef {
                file: file_at(&files, ids[i])?,
                offset: offs[i],
                length: lens[i],
                subtree_common_prefix_length: scp[i],
            });
        }
        NodeBody::Interior(children)
    };
    if !c.at_end() {
        return Err(format!("{} trailing bytes", buf.len() - c.pos));
    }
    Ok(BtreeNode { height, keys, body })
}
