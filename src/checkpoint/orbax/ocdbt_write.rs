//! OCDBT encoding: envelopes, data file tables, B+tree nodes and the manifest (the inverse of
//! [`super::ocdbt`]; hand-written for the same reason: no crate implements OCDBT).
//!
//! Writers pick the file that receives each node; nodes name files through their own data file table,
//! which this module builds from the global file list the caller keeps.

use std::io::Write;

use super::codec::{crc32c, zstd_encode};
use super::ocdbt::{OcdbtConfig, BTREE_NODE_MAGIC, MANIFEST_MAGIC};

/// Entries per leaf node before the tree grows a level (tensorstore splits by decoded bytes; any split
/// with strictly increasing keys reads the same).
pub const LEAF_ENTRIES: usize = 4096;
/// Children per interior node.
pub const INTERIOR_ENTRIES: usize = 1024;

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// magic (u32 BE) | length (u64 LE) | version 0 | compression | body (raw or one zstd frame) | crc32c.
pub fn encode_envelope(magic: u32, body: &[u8], zstd_level: Option<i32>) -> Vec<u8> {
    let mut payload = vec![0u8]; // format version
    match zstd_level {
        None => {
            payload.push(0);
            payload.extend_from_slice(body);
        }
        Some(level) => {
            payload.push(1);
            payload.extend(zstd_encode(body, level));
        }
    }
    let len = 4 + 8 + payload.len() + 4;
    let mut out = Vec::with_capacity(len);
    out.extend(magic.to_be_bytes());
    out.extend((len as u64).to_le_bytes());
    out.extend(payload);
    let crc = crc32c(&out);
    out.extend(crc.to_le_bytes());
    out
}

/// A data file as a table names it: base path (sticky down the tree) and relative path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    pub base: Vec<u8>,
    pub rel: Vec<u8>,
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Encodes a data file table; `files` must be sorted and unique (as tensorstore writes them).
pub fn encode_data_file_table(out: &mut Vec<u8>, files: &[FileName]) {
    varint(out, files.len() as u64);
    let paths: Vec<Vec<u8>> = files.iter().map(|f| [f.base.as_slice(), &f.rel].concat()).collect();
    let mut prefix = vec![0usize];
    for i in 1..files.len() {
        // The shared prefix may reach into the relative path only when both base paths are equal.
        let mut p = common_prefix(&files[i - 1].base, &files[i].base);
        if files[i - 1].base == files[i].base {
            p += common_prefix(&files[i - 1].rel, &files[i].rel);
        }
        prefix.push(p);
    }
    for p in &prefix[1..] {
        varint(out, *p as u64);
    }
    for (path, p) in paths.iter().zip(&prefix) {
        varint(out, (path.len() - p) as u64);
    }
    for f in files {
        varint(out, f.base.len() as u64);
    }
    for (path, p) in paths.iter().zip(&prefix) {
        out.extend_from_slice(&path[*p..]);
    }
}

/// A leaf value: inline bytes, or `length` bytes at `offset` of global file `file`.
#[derive(Clone, Debug)]
pub enum EntryValue {
    Inline(Vec<u8>),
    Indirect { file: usize, offset: u64, length: u64 },
}

/// Where a node was written, with the statistics its parent (or the manifest) records.
#[derive(Clone, Debug)]
pub struct NodeRef {
    pub height: u8,
    pub file: usize,
    pub offset: u64,
    pub length: u64,
    pub first_key: Vec<u8>,
    pub num_keys: u64,
    pub num_tree_bytes: u64,
    pub num_indirect_value_bytes: u64,
}

/// Receives encoded nodes: appends them to global file `file` and says at which offset.
pub trait NodeSink {
    fn file(&self) -> usize;
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64>;
}

/// A node's own data file table: the referenced global files, sorted, plus global -> local ids.
fn local_table(files: &[FileName], used: impl Iterator<Item = usize>) -> (Vec<FileName>, Vec<(usize, u64)>) {
    let mut ids: Vec<usize> = used.collect();
    ids.sort_by(|a, b| files[*a].cmp(&files[*b]));
    ids.dedup();
    let table = ids.iter().map(|i| files[*i].clone()).collect();
    let map = ids.iter().enumerate().map(|(local, g)| (*g, local as u64)).collect();
    (table, map)
}

fn local_id(map: &[(usize, u64)], global: usize) -> u64 {
    map.iter().find(|(g, _)| *g == global).expect("file listed in the node table").1
}

fn encode_keys(body: &mut Vec<u8>, keys: &[&[u8]], subtree_prefix: Option<&[u64]>) {
    varint(body, keys.len() as u64);
    let prefix: Vec<usize> = std::iter::once(0).chain(keys.windows(2).map(|w| common_prefix(w[0], w[1]))).collect();
    for p in &prefix[1..] {
        varint(body, *p as u64);
    }
    for (k, p) in keys.iter().zip(&prefix) {
        varint(body, (k.len() - p) as u64);
    }
    if let Some(scp) = subtree_prefix {
        for s in scp {
            varint(body, *s);
        }
    }
    for (k, p) in keys.iter().zip(&prefix) {
        body.extend_from_slice(&k[*p..]);
    }
}

fn encode_leaf(files: &[FileName], entries: &[(Vec<u8>, EntryValue)]) -> Vec<u8> {
    let (table, map) = local_table(
        files,
        entries.iter().filter_map(|(_, v)| match v {
            EntryValue::Indirect { file, .. } => Some(*file),
            EntryValue::Inline(_) => None,
        }),
    );
    let mut body = vec![0u8]; // height
    encode_data_file_table(&mut body, &table);
    let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
    encode_keys(&mut body, &keys, None);
    for (_, v) in entries {
        varint(
            &mut body,
            match v {
                EntryValue::Inline(b) => b.len() as u64,
                EntryValue::Indirect { length, .. } => *length,
            },
        );
    }
    for (_, v) in entries {
        body.push(matches!(v, EntryValue::Indirect { .. }) as u8);
    }
    for (_, v) in entries {
        if let EntryValue::Indirect { file, .. } = v {
            varint(&mut body, local_id(&map, *file));
        }
    }
    for (_, v) in entries {
        if let EntryValue::Indirect { offset, .. } = v {
            varint(&mut body, *offset);
        }
    }
    for (_, v) in entries {
        if let EntryValue::Inline(b) = v {
            body.extend_from_slice(b);
        }
    }
    body
}

fn encode_interior(files: &[FileName], height: u8, children: &[NodeRef]) -> Vec<u8> {
    let (table, map) = local_table(files, children.iter().map(|c| c.file));
    let mut body = vec![height];
    encode_data_file_table(&mut body, &table);
    let keys: Vec<&[u8]> = children.iter().map(|c| c.first_key.as_slice()).collect();
    // Child keys are stored whole (subtree common prefix 0), so a child's keys need no prefix.
    encode_keys(&mut body, &keys, Some(&vec![0; children.len()]));
    let columns: [fn(&NodeRef) -> u64; 5] =
        [|c| c.offset, |c| c.length, |c| c.num_keys, |c| c.num_tree_bytes, |c| c.num_indirect_value_bytes];
    for c in children {
        varint(&mut body, local_id(&map, c.file));
    }
    for col in columns {
        for c in children {
            varint(&mut body, col(c));
        }
    }
    body
}

/// Writes the B+tree over `entries` (sorted, unique keys) bottom-up into `sink` and returns its root.
/// Returns `None` for an empty database.
pub fn write_tree(
    entries: &[(Vec<u8>, EntryValue)],
    files: &[FileName],
    sink: &mut dyn NodeSink,
    zstd_level: Option<i32>,
    leaf_entries: usize,
) -> std::io::Result<Option<NodeRef>> {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys must be sorted and unique");
    let mut level = Vec::new();
    for chunk in entries.chunks(leaf_entries.max(1)) {
        let node = encode_envelope(BTREE_NODE_MAGIC, &encode_leaf(files, chunk), zstd_level);
        let offset = sink.append(&node)?;
        level.push(NodeRef {
            height: 0,
            file: sink.file(),
            offset,
            length: node.len() as u64,
            first_key: chunk[0].0.clone(),
            num_keys: chunk.len() as u64,
            num_tree_bytes: node.len() as u64,
            num_indirect_value_bytes: chunk
                .iter()
                .map(|(_, v)| match v {
                    EntryValue::Indirect { length, .. } => *length,
                    EntryValue::Inline(_) => 0,
                })
                .sum(),
        });
    }
    let mut height = 0u8;
    while level.len() > 1 {
        height += 1;
        let mut next = Vec::new();
        for group in level.chunks(INTERIOR_ENTRIES) {
            let node = encode_envelope(BTREE_NODE_MAGIC, &encode_interior(files, height, group), zstd_level);
            let offset = sink.append(&node)?;
            next.push(NodeRef {
                height,
                file: sink.file(),
                offset,
                length: node.len() as u64,
                first_key: group[0].first_key.clone(),
                num_keys: group.iter().map(|c| c.num_keys).sum(),
                num_tree_bytes: node.len() as u64 + group.iter().map(|c| c.num_tree_bytes).sum::<u64>(),
                num_indirect_value_bytes: group.iter().map(|c| c.num_indirect_value_bytes).sum(),
            });
        }
        level = next;
    }
    Ok(level.pop())
}

/// A single-kind manifest (config, data file table, one inline version, no version tree nodes).
pub fn encode_manifest(
    config: &OcdbtConfig,
    root_file: &FileName,
    root: Option<&NodeRef>,
    generation: u64,
    commit_time_ns: u64,
) -> Vec<u8> {
    let mut body = config.uuid.to_vec();
    body.push(0); // manifest_kind: single
    varint(&mut body, config.max_inline_value_bytes);
    varint(&mut body, config.max_decoded_node_bytes);
    body.push(config.version_tree_arity_log2);
    match config.zstd_level {
        None => varint(&mut body, 0),
        Some(level) => {
            varint(&mut body, 1);
            body.extend(level.to_le_bytes());
        }
    }
    let empty = FileName { base: vec![], rel: vec![] };
    encode_data_file_table(&mut body, std::slice::from_ref(if root.is_some() { root_file } else { &empty }));
    varint(&mut body, 1); // one inline version
    varint(&mut body, generation);
    body.push(root.map_or(0, |r| r.height));
    varint(&mut body, 0); // data file id
    match root {
        Some(r) => {
            for v in [r.offset, r.length, r.num_keys, r.num_tree_bytes, r.num_indirect_value_bytes] {
                varint(&mut body, v);
            }
        }
        None => {
            for v in [u64::MAX, u64::MAX, 0, 0, 0] {
                varint(&mut body, v);
            }
        }
    }
    body.extend(commit_time_ns.to_le_bytes());
    varint(&mut body, 0); // no version tree nodes
    encode_envelope(MANIFEST_MAGIC, &body, config.zstd_level)
}

/// A `Vec<u8>`-backed sink, for tests and small databases.
pub struct VecSink<'a> {
    pub file: usize,
    pub buf: &'a mut Vec<u8>,
}

impl NodeSink for VecSink<'_> {
    fn file(&self) -> usize {
        self.file
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        let off = self.buf.len() as u64;
        self.buf.write_all(bytes)?;
        Ok(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::orbax::ocdbt::OcdbtDatabase;

    fn config(zstd_level: Option<i32>) -> OcdbtConfig {
        OcdbtConfig {
            uuid: [7; 16],
            max_inline_value_bytes: 1024,
            max_decoded_node_bytes: 100_000_000,
            version_tree_arity_log2: 4,
            zstd_level,
        }
    }

    /// Writes a database with many keys, small leaves (so interior nodes appear), inline and indirect
    /// values through a base path, and reads it back with the reader.
    #[test]
    fn tree_round_trips_through_the_reader() {
        for (zstd, leaf) in [(None, 3), (Some(0), 2), (Some(3), 4096)] {
            let dir = tempfile::tempdir().unwrap();
            let files = vec![
                FileName { base: b"ocdbt.process_0/".to_vec(), rel: b"d/values".to_vec() },
                FileName { base: vec![], rel: b"d/nodes".to_vec() },
            ];
            let mut values = Vec::new();
            let mut entries = Vec::new();
            let mut expect = Vec::new();
            for i in 0..40u32 {
                let key = format!("arr{:02}/c/{}", i / 3, i % 3).into_bytes();
                let val: Vec<u8> = (0..(i * 57) % 2000).map(|j| (j * 31 + i) as u8).collect();
                let ev = if val.len() <= 1024 {
                    EntryValue::Inline(val.clone())
                } else {
                    let off = values.len() as u64;
                    values.extend_from_slice(&val);
                    EntryValue::Indirect { file: 0, offset: off, length: val.len() as u64 }
                };
                entries.push((key.clone(), ev));
                expect.push((key, val));
            }
            std::fs::create_dir_all(dir.path().join("ocdbt.process_0/d")).unwrap();
            std::fs::create_dir_all(dir.path().join("d")).unwrap();
            std::fs::write(dir.path().join("ocdbt.process_0/d/values"), &values).unwrap();
            let mut nodes = Vec::new();
            let root =
                write_tree(&entries, &files, &mut VecSink { file: 1, buf: &mut nodes }, zstd, leaf).unwrap().unwrap();
            assert_eq!(root.height > 0, leaf < 40);
            std::fs::write(dir.path().join("d/nodes"), &nodes).unwrap();
            let manifest = encode_manifest(&config(zstd), &files[1], Some(&root), 1, 42);
            std::fs::write(dir.path().join("manifest.ocdbt"), manifest).unwrap();
            let db = OcdbtDatabase::open(dir.path()).unwrap();
            assert_eq!(db.len(), expect.len());
            assert_eq!(db.config, config(zstd));
            for (k, v) in &expect {
                assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
            }
            assert_eq!(db.get(b"nope").unwrap(), None);
        }
    }

    #[test]
    fn empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let name = FileName { base: vec![], rel: vec![] };
        std::fs::write(dir.path().join("manifest.ocdbt"), encode_manifest(&config(None), &name, None, 1, 0)).unwrap();
        assert!(OcdbtDatabase::open(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn data_file_table_prefix_stays_within_equal_bases() {
        let files = vec![
            FileName { base: b"ocdbt.process_0/".to_vec(), rel: b"d/ab".to_vec() },
            FileName { base: b"ocdbt.process_1/".to_vec(), rel: b"d/ab".to_vec() },
        ];
        let mut out = Vec::new();
        encode_data_file_table(&mut out, &files);
        // num_files, prefix 14 ("ocdbt.process_"), suffix lengths 20 and 6, base lengths 16 and 16.
        assert_eq!(&out[..6], &[2, 14, 20, 6, 16, 16]);
    }
}
