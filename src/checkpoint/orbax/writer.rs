//! Writing a checkpoint in MaxText's layout, as orbax 0.12.8 writes a `CheckpointManager` save with
//! `PyTreeCheckpointHandler(use_ocdbt=True, use_zarr3=True)` (shown for one process):
//!
//! ```text
//! <root>/<step>/_CHECKPOINT_METADATA, commit_success.txt
//! <root>/<step>/items/_METADATA, _sharding, array_metadatas/process_0, commit_success.txt
//! <root>/<step>/items/ocdbt.process_0/{manifest.ocdbt, d/<hex>}   the process's database: every value
//! <root>/<step>/items/{manifest.ocdbt, d/<hex>}                   the merged root: small values inline,
//!                                                                 large ones in ocdbt.process_0/d/<hex>
//! ```
//!
//! Locally everything goes into `<root>/<step>.orbax-checkpoint-tmp-<id>/` first (a name orbax and our
//! reader both treat as unfinished); files and directories are fsynced and the directory is renamed to
//! `<root>/<step>` only when complete. GCS has no rename, so there (as orbax's `CommitFileTemporaryPath`)
//! the objects go straight under `<root>/<step>/` and `commit_success.txt` is written last: a step without
//! it is never listed or restored, and a later save of the same step first deletes such leftovers. Object
//! names and bytes are those of the local layout. An existing (committed) step is never replaced.
//!
//! **Several processes** ([`CheckpointWriter::create_shared`]) save one checkpoint together, as orbax does
//! on a multi-host slice: process 0 picks the temporary directory and tells the others through the
//! coordinator; each process writes the shards it owns into its own `ocdbt.process_<i>/` database and its
//! own `array_metadatas/process_<i>` and says so (`written/<i>`: done, or why not); once all have, process 0
//! reads every process database back, writes the merged root and the metadata, commits (rename /
//! `commit_success.txt`) and tells the others, who return only then. A failure anywhere leaves nothing
//! committed.

use std::borrow::Cow;

use serde_json::Value;

use std::sync::Arc;
use std::time::Duration;

use super::db_writer::{hex, now_ns, process_dir_name, random_bytes, sync_dir, write_file, write_merged_root, DbWriter, ProcessDb};
use super::dtype::ZarrDType;
use super::metadata::{
    leaf_name, render_sharding, render_tree_metadata, PathKey, PyJson, ARRAY_METADATAS_DIR, CHECKPOINT_METADATA_FILE,
    COMMIT_FILE, METADATA_FILE, SHARDING_FILE,
};
use super::zarr::for_each_index;
use super::zarr3::orbax_codecs_json;
use super::{write_err, OrbaxError, Result, TMP_MARKER};
use crate::distributed::ProcessGroup;
use crate::storage::Location;
use crate::runtime::HostTensor;

/// How long a process waits for the others during a save (orbax's default async timeout): the slowest
/// process may still be writing its shards.
const SAVE_WAIT_TIMEOUT: Duration = Duration::from_secs(600);
const HANDLER: &str = "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler";

/// What `_sharding` records for every array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardingRecord {
    /// `SingleDeviceSharding` on `cpu:0`: byte-identical to orbax on a CPU host. A targetless restore on a
    /// host without that device fails (restores with a target, as MaxText does, ignore it).
    SingleDeviceCpu0,
    /// A 1-device `NamedSharding` on device id 0, fully replicated: restores targetless on any platform.
    NamedDevice0,
    /// No `_sharding`; leaves are `np.ndarray` and restore as numpy arrays.
    NoneNumpy,
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `custom_metadata` of the step's `_CHECKPOINT_METADATA` (MaxText: `{"scan_layers": true}`).
    pub custom_metadata: Value,
    pub sharding: ShardingRecord,
    /// orbax `SaveArgs(chunk_byte_size)`: arrays above this are split into chunks (MaxText: 2 GiB).
    pub chunk_byte_size: u64,
    /// orbax `ocdbt_target_data_file_size`: a data file is closed once it reaches this (MaxText: 2 GiB).
    pub target_data_file_size: u64,
    /// zstd level of the zarr3 chunks (orbax: 3).
    pub zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            custom_metadata: Value::Object(Default::default()),
            sharding: ShardingRecord::SingleDeviceCpu0,
            chunk_byte_size: 2 << 30,
            target_data_file_size: 2 << 30,
            zstd_level: 3,
        }
    }
}

/// A leaf to save: its key path (dict keys and sequence indices) and its value.
#[derive(Clone, Debug)]
pub struct WriteLeaf<'a> {
    pub path: Vec<PathKey>,
    pub tensor: &'a HostTensor,
}

/// Saves `leaves` (dotted names, e.g. `params.decoder.layers.mlp.wi_0.kernel`; an all-digit segment is a
/// sequence index, as in `opt_state.0.mu`) as step `step` under `root`, and returns the step directory
/// (`<root>/<step>`; the item directory is its `items/`).
pub fn write_checkpoint(
    root: impl Into<Location>,
    step: u64,
    leaves: &[(String, HostTensor)],
    custom_metadata: Value,
) -> Result<Location> {
    let leaves = leaves
        .iter()
        .map(|(name, tensor)| Ok(WriteLeaf { path: parse_dotted(name)?, tensor }))
        .collect::<Result<Vec<_>>>()?;
    let custom_metadata = if custom_metadata.is_null() { Value::Object(Default::default()) } else { custom_metadata };
    write_checkpoint_with(root, step, &leaves, &WriteOptions { custom_metadata, ..WriteOptions::default() })
}

/// The key path of a dotted leaf name (see [`write_checkpoint`]).
pub fn parse_dotted(name: &str) -> Result<Vec<PathKey>> {
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(OrbaxError::BadLeaf {
            name: name.into(),
            reason: "a leaf name needs non-empty segments separated by '.'".into(),
        });
    }
    Ok(name
        .split('.')
        .map(|s| match s.parse::<usize>() {
            Ok(i) if s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')) => PathKey::Index(i),
            _ => PathKey::Key(s.to_string()),
        })
        .collect())
}

/// [`write_checkpoint`] with explicit key paths and options.
pub fn write_checkpoint_with(
    root: impl Into<Location>,
    step: u64,
    leaves: &[WriteLeaf],
    opts: &WriteOptions,
) -> Result<Location> {
    let mut order: Vec<&WriteLeaf> = leaves.iter().collect();
    order.sort_by(|a, b| a.path.cmp(&b.path));
    validate(&order)?;
    let mut w = CheckpointWriter::create(root, step, opts.clone())?;
    for leaf in order {
        w.add_path(leaf.path.clone(), leaf.tensor)?;
    }
    w.finish()
}

fn validate(order: &[&WriteLeaf]) -> Result<()> {
    for w in order.windows(2) {
        if w[1].path.starts_with(&w[0].path) {
            let (a, b) = (leaf_name(&w[0].path), leaf_name(&w[1].path));
            let reason = if a == b {
                "two leaves have this name".to_string()
            } else {
                format!("it is both a leaf and the parent of {b}")
            };
            return Err(OrbaxError::BadLeaf { name: a, reason });
        }
    }
    let mut names = std::collections::HashSet::new();
    for l in order {
        let name = leaf_name(&l.path);
        if !names.insert(name.clone()) {
            let reason = "two key paths give this array name (orbax joins keys with '.' without escaping)".into();
            return Err(OrbaxError::BadLeaf { name, reason });
        }
        check_tensor(&l.path, l.tensor)?;
    }
    Ok(())
}

fn check_tensor(path: &[PathKey], t: &HostTensor) -> Result<()> {
    if path.is_empty() {
        return Err(OrbaxError::BadLeaf { name: String::new(), reason: "empty key path".into() });
    }
    let n: i64 = t.dims.iter().product();
    if t.dims.iter().any(|d| *d < 0) || t.data.len() != n as usize * t.dtype.size_bytes() {
        return Err(OrbaxError::BadLeaf {
            name: leaf_name(path),
            reason: format!("{} bytes do not fit {}{:?}", t.data.len(), t.dtype, t.dims),
        });
    }
    Ok(())
}

/// What `_METADATA`, `_sharding` and `array_metadatas` record for one leaf.
struct LeafRecord {
    path: Vec<PathKey>,
    value_type: &'static str,
    write_shape: Vec<u64>,
    /// `None` for empty leaves (no array).
    array_metadata: Option<PyJson>,
    /// The leaf's own `_sharding` record, if not the writer's default.
    sharding: Option<PyJson>,
}

/// An array being written shard by shard (see [`CheckpointWriter::begin_array`]).
#[derive(Debug)]
pub struct ArrayInProgress {
    path: Vec<PathKey>,
    name: String,
    dtype: crate::ir::DType,
    shape: Vec<u64>,
    write_shape: Vec<u64>,
    chunks: Vec<u64>,
    sharding: Option<PyJson>,
    /// `array_metadatas` `ext_metadata` (orbax marks JAX PRNG key arrays with `{"random_key_impl": ...}`).
    ext_metadata: PyJson,
}

impl ArrayInProgress {
    /// Marks the array as the key data of a JAX PRNG key array of implementation `impl_name` (e.g.
    /// `unsafe_rbg`), as orbax records a typed key array: orbax then restores it as a key array again.
    pub fn prng_key(mut self, impl_name: &str) -> ArrayInProgress {
        self.ext_metadata = PyJson::obj([("random_key_impl", PyJson::Str(impl_name.into()))]);
        self
    }
}

/// orbax's `NamedSharding` record of a leaf: the mesh (axis names and sizes, with the device ids of its
/// partitions in row-major order) and, per array dim, the mesh axes it is split over.
pub fn named_sharding_record(mesh_axes: &[(String, i64)], device_ids: &[i64], spec: &[Vec<String>]) -> PyJson {
    fn nest(ids: &[i64], sizes: &[i64]) -> PyJson {
        match sizes.split_first() {
            None => PyJson::obj([("id", PyJson::Int(ids[0]))]),
            Some((n, rest)) => {
                let step = ids.len() / *n as usize;
                PyJson::Arr((0..*n as usize).map(|i| nest(&ids[i * step..(i + 1) * step], rest)).collect())
            }
        }
    }
    let sizes: Vec<i64> = mesh_axes.iter().map(|(_, s)| *s).collect();
    let pspec = spec
        .iter()
        .map(|axes| match axes.as_slice() {
            [] => PyJson::Null,
            [a] => PyJson::Str(a.clone()),
            many => PyJson::Arr(many.iter().map(|a| PyJson::Str(a.clone())).collect()),
        })
        .collect();
    PyJson::obj([
        ("sharding_type", PyJson::Str("NamedSharding".into())),
        ("shape", PyJson::ints(&sizes.iter().map(|s| *s as u64).collect::<Vec<_>>())),
        ("axis_names", PyJson::Arr(mesh_axes.iter().map(|(n, _)| PyJson::Str(n.clone())).collect())),
        ("axis_types", PyJson::Arr(mesh_axes.iter().map(|_| PyJson::Str("AxisType.Auto".into())).collect())),
        ("partition_spec", PyJson::Arr(pspec)),
        ("device_mesh", PyJson::obj([("mesh", nest(device_ids, &sizes))])),
    ])
}

/// A checkpoint being written leaf by leaf, so that only one array is in memory at a time (what
/// `maxtext convert` needs for models larger than RAM). Leaves may come in any order; the metadata files are
/// written in orbax's (sorted) order by [`CheckpointWriter::finish`], which then renames the temporary
/// directory into place. Dropping an unfinished writer removes its temporary directory; a killed process
/// leaves `<root>/<step>.orbax-checkpoint-tmp-<id>/`, which no restore accepts.
pub struct CheckpointWriter {
    root: Location,
    step_dir: Location,
    /// Where the files go while being written: a temporary sibling locally, the step itself on GCS.
    tmp: Location,
    /// Set once committed, so that dropping the writer leaves the files alone.
    done: bool,
    opts: WriteOptions,
    init_ns: u64,
    db: Option<DbWriter>,
    /// The processes saving together (`None`: this process alone).
    group: Option<Arc<ProcessGroup>>,
    /// Whether this process has told the others how its part ended (see `Drop`).
    signalled: bool,
    /// In the order added.
    leaves: Vec<LeafRecord>,
    names: std::collections::HashSet<String>,
    bytes: u64,
}

impl CheckpointWriter {
    /// Starts step `step` under `root`: fails at once if `<root>/<step>` exists.
    pub fn create(root: impl Into<Location>, step: u64, opts: WriteOptions) -> Result<CheckpointWriter> {
        let root: Location = root.into();
        let (step_dir, tmp) = Self::start_dir(&root, step)?;
        Self::open(root, step_dir, tmp, opts, None)
    }

    /// Starts step `step` under `root`, saved together by every process of `group` (see the module docs):
    /// every process calls this, adds the same leaves (each putting only the shards it owns) and calls
    /// [`CheckpointWriter::finish`].
    pub fn create_shared(root: impl Into<Location>, step: u64, opts: WriteOptions, group: Arc<ProcessGroup>) -> Result<CheckpointWriter> {
        let root: Location = root.into();
        let step_dir = root.join(step.to_string());
        let key = save_key(&step_dir, "dir");
        let fail = |reason: String| OrbaxError::Processes { path: step_dir.clone(), reason };
        let tmp = if group.is_primary() {
            match Self::start_dir(&root, step) {
                Ok((_, tmp)) => {
                    group.put(&key, format!("ok:{tmp}").as_bytes()).map_err(|e| fail(e.to_string()))?;
                    tmp
                }
                Err(e) => {
                    // The others are waiting for the directory: they stop with this reason.
                    let _ = group.put(&key, format!("error:{e}").as_bytes());
                    return Err(e);
                }
            }
        } else {
            let said = group.get(&key, SAVE_WAIT_TIMEOUT).map_err(|e| fail(e.to_string()))?;
            let said = String::from_utf8_lossy(&said).into_owned();
            match said.split_once(':') {
                Some(("ok", dir)) => Location::parse(dir).map_err(|e| fail(format!("process 0 named {dir}: {e}")))?,
                _ => return Err(fail(format!("process 0 could not start the save: {}", said.trim_start_matches("error:")))),
            }
        };
        Self::open(root, step_dir, tmp, opts, Some(group))
    }

    /// The step directory and where its files go while being written.
    fn start_dir(root: &Location, step: u64) -> Result<(Location, Location)> {
        let step_dir = root.join(step.to_string());
        let tmp = if root.is_remote() {
            if step_dir.join(COMMIT_FILE).is_file().map_err(super::io_err(&step_dir))? {
                return Err(OrbaxError::StepExists { path: step_dir });
            }
            if step_dir.is_dir().map_err(super::io_err(&step_dir))? {
                // A save of this step that never committed (the process was killed): its objects are garbage.
                tracing::warn!("{step_dir} holds an unfinished save (no {COMMIT_FILE}); deleting it before saving again");
                step_dir.remove_all().map_err(write_err(&step_dir))?;
            }
            step_dir.clone()
        } else {
            if step_dir.as_local().is_some_and(|p| p.exists()) {
                return Err(OrbaxError::StepExists { path: step_dir });
            }
            root.create_dir_all().map_err(write_err(root))?;
            root.join(format!("{step}{TMP_MARKER}-{}", hex(&random_bytes::<8>())))
        };
        Ok((step_dir, tmp))
    }

    fn open(root: Location, step_dir: Location, tmp: Location, opts: WriteOptions, group: Option<Arc<ProcessGroup>>) -> Result<CheckpointWriter> {
        let items = tmp.join("items");
        let proc_dir = items.join(process_dir_name(group.as_ref().map_or(0, |g| g.index())));
        let mut w = CheckpointWriter {
            root,
            step_dir,
            tmp,
            done: false,
            db: None,
            group,
            signalled: false,
            init_ns: now_ns(),
            leaves: Vec::new(),
            names: Default::default(),
            bytes: 0,
            opts,
        };
        for d in [items.join("d"), proc_dir.join("d"), items.join(ARRAY_METADATAS_DIR)] {
            d.create_dir_all().map_err(write_err(&d))?;
        }
        w.db = Some(DbWriter::new(&proc_dir, w.opts.target_data_file_size));
        Ok(w)
    }

    /// This process's index among the processes saving (0 alone).
    fn index(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.index())
    }

    /// Whether this process writes what is written once (array metadata, the merged root, the commit).
    fn is_primary(&self) -> bool {
        self.index() == 0
    }

    /// The directory being written (renamed to `<root>/<step>` by [`CheckpointWriter::finish`] locally;
    /// the step directory itself on GCS).
    pub fn tmp_dir(&self) -> &Location {
        &self.tmp
    }

    /// Array bytes added so far (uncompressed).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Adds a leaf by its dotted name (see [`write_checkpoint`]).
    pub fn add(&mut self, name: &str, tensor: &HostTensor) -> Result<()> {
        self.add_path(parse_dotted(name)?, tensor)
    }

    /// Adds a leaf: its data are compressed and appended to the database now; the caller may drop the
    /// tensor as soon as this returns. The same as one array of one shard.
    pub fn add_path(&mut self, path: Vec<PathKey>, t: &HostTensor) -> Result<()> {
        check_tensor(&path, t)?;
        let array = self.begin_array(path, t.dtype, &t.dims, &t.dims, None)?;
        self.put_shard(&array, &vec![0; t.dims.len()], &t.data)?;
        self.end_array(array)
    }

    /// Starts a leaf saved shard by shard (a sharded `jax.Array`): `shard_dims` is the shape of every
    /// shard, which orbax uses as the chunk shape (cut further only above `chunk_byte_size`), and
    /// `sharding` the leaf's `_sharding` record (`None`: the writer's [`ShardingRecord`]). Each distinct
    /// shard then goes in with [`CheckpointWriter::put_shard`]; [`CheckpointWriter::end_array`] checks that
    /// all came.
    pub fn begin_array(
        &mut self,
        path: Vec<PathKey>,
        dtype: crate::ir::DType,
        dims: &[i64],
        shard_dims: &[i64],
        sharding: Option<PyJson>,
    ) -> Result<ArrayInProgress> {
        let name = leaf_name(&path);
        let bad = |reason: String| OrbaxError::BadLeaf { name: name.clone(), reason };
        if path.is_empty() {
            return Err(bad("empty key path".into()));
        }
        if dims.len() != shard_dims.len() || dims.iter().zip(shard_dims).any(|(d, s)| *d < 0 || *s <= 0 && *d != 0 || *s > 0 && d % s != 0) {
            return Err(bad(format!("shards of {shard_dims:?} do not tile {dims:?}")));
        }
        if !self.names.insert(name.clone()) {
            return Err(bad("two leaves have this name (orbax joins keys with '.' without escaping)".into()));
        }
        let zdtype = ZarrDType::from_host(dtype);
        let shape: Vec<u64> = dims.iter().map(|d| *d as u64).collect();
        let write_shape: Vec<u64> = shard_dims.iter().map(|d| *d as u64).collect();
        let chunks = choose_chunk_shape(&write_shape, zdtype.size() as u64, self.opts.chunk_byte_size);
        if self.is_primary() {
            // One process writes each array's metadata (as orbax's primary host does); the chunks come from
            // whichever process owns them.
            let db = self.db.as_mut().expect("the database is open until finish");
            db.put(format!("{name}/zarr.json"), zarr_json(&shape, &chunks, zdtype, self.opts.zstd_level).into_bytes())?;
        }
        Ok(ArrayInProgress { path, name, dtype, shape, write_shape, chunks, sharding, ext_metadata: PyJson::Null })
    }

    /// Writes one shard (at element `offsets`, row-major bytes of the array's shard shape) of an array
    /// begun with [`CheckpointWriter::begin_array`]: its chunks are compressed and appended now.
    pub fn put_shard(&mut self, array: &ArrayInProgress, offsets: &[i64], data: &[u8]) -> Result<()> {
        let elem = ZarrDType::from_host(array.dtype).size();
        let want = array.write_shape.iter().product::<u64>() as usize * elem;
        let aligned = offsets.len() == array.shape.len()
            && offsets.iter().zip(&array.write_shape).zip(&array.shape).all(|((o, w), s)| *o >= 0 && (*o as u64) < (*s).max(1) && (*w == 0 || *o as u64 % w == 0));
        if data.len() != want || !aligned {
            return Err(OrbaxError::BadLeaf {
                name: array.name.clone(),
                reason: format!("shard at {offsets:?} with {} bytes does not fit shards of {:?} ({want} bytes)", data.len(), array.write_shape),
            });
        }
        let (chunks, level) = (&array.chunks, self.opts.zstd_level);
        let db = self.db.as_mut().expect("the database is open until finish");
        let local: Vec<u64> = array.write_shape.iter().zip(chunks).map(|(s, c)| s.div_ceil(*c)).collect();
        let mut result = Ok(());
        for_each_index(&local, |g| {
            if result.is_ok() {
                let global: Vec<u64> = g.iter().zip(offsets).zip(chunks).map(|((i, o), c)| i + *o as u64 / c).collect();
                let key = std::iter::once("c".to_string()).chain(global.iter().map(u64::to_string)).collect::<Vec<_>>().join("/");
                let block = extract_block(data, &array.write_shape, g, chunks, elem);
                result = db.put_shard(format!("{}/{key}", array.name), &block, level);
            }
        });
        result?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Adds an empty leaf (`None`: what orbax saves for optax's `EmptyState()`, e.g. MaxText's
    /// `opt_state.1`); orbax needs it to rebuild a list whose later items are present.
    pub fn add_none(&mut self, path: Vec<PathKey>) -> Result<()> {
        let name = leaf_name(&path);
        if !self.names.insert(name.clone()) {
            return Err(OrbaxError::BadLeaf { name, reason: "two leaves have this name".into() });
        }
        self.leaves.push(LeafRecord { path, value_type: "None", write_shape: vec![], array_metadata: None, sharding: None });
        Ok(())
    }

    /// Records an array begun with [`CheckpointWriter::begin_array`] once all its shards are in.
    pub fn end_array(&mut self, array: ArrayInProgress) -> Result<()> {
        let value_type =
            if self.opts.sharding == ShardingRecord::NoneNumpy && array.sharding.is_none() { "np.ndarray" } else { "jax.Array" };
        let am = PyJson::obj([(
            "array_metadata",
            PyJson::obj([
                ("param_name", PyJson::Str(array.name.clone())),
                ("write_shape", PyJson::ints(&array.write_shape)),
                ("chunk_shape", PyJson::ints(&array.chunks)),
                ("ext_metadata", array.ext_metadata),
            ]),
        )]);
        self.leaves.push(LeafRecord { path: array.path, value_type, write_shape: array.write_shape, array_metadata: Some(am), sharding: array.sharding });
        Ok(())
    }

    /// Writes the databases' trees and the metadata files, syncs everything and renames the temporary
    /// directory to `<root>/<step>`; returns that step directory. Saving with other processes, this waits
    /// for all of them, and process 0 merges and commits for all (see the module docs).
    pub fn finish(mut self) -> Result<Location> {
        let _span = tracing::info_span!("checkpoint", root = %self.root).entered();
        self.leaves.sort_by(|a, b| a.path.cmp(&b.path));
        for w in self.leaves.windows(2) {
            if w[1].path.starts_with(&w[0].path) {
                let (a, b) = (leaf_name(&w[0].path), leaf_name(&w[1].path));
                return Err(OrbaxError::BadLeaf { name: a, reason: format!("it is both a leaf and the parent of {b}") });
            }
        }
        let db = self.db.take().expect("finish runs once").finish()?;
        self.write_array_metadatas()?;
        let Some(group) = self.group.clone() else {
            self.write_metadata(&[(0, db)])?;
            return self.commit_dir();
        };
        if group.is_primary() {
            self.finish_primary(&group, db)
        } else {
            self.finish_secondary(&group)
        }
    }

    /// The error of a multi-process save of this step.
    fn processes_err(&self, reason: String) -> OrbaxError {
        OrbaxError::Processes { path: self.step_dir.clone(), reason }
    }

    /// Another process: says its shards are written, then waits for process 0's commit.
    fn finish_secondary(mut self, group: &ProcessGroup) -> Result<Location> {
        let written = save_key(&self.step_dir, &format!("written/{}", group.index()));
        self.signalled = true;
        group.put(&written, b"ok").map_err(|e| self.processes_err(e.to_string()))?;
        let said = group.get(&save_key(&self.step_dir, "committed"), SAVE_WAIT_TIMEOUT).map_err(|e| self.processes_err(e.to_string()))?;
        // Process 0 owns the directory from here: committed, or removed by it.
        self.done = true;
        match String::from_utf8_lossy(&said).split_once(':') {
            Some(("ok", _)) => Ok(self.step_dir.clone()),
            other => Err(self.processes_err(format!("process 0 did not commit: {}", other.map_or("", |o| o.1)))),
        }
    }

    /// Process 0: waits for every process's shards, merges their databases, writes the metadata, commits,
    /// and tells the others how it went.
    fn finish_primary(mut self, group: &ProcessGroup, db: ProcessDb) -> Result<Location> {
        let merged = (|| -> Result<Location> {
            let items = self.tmp.join("items");
            let mut dbs = vec![(0, db)];
            for p in 1..group.count() {
                let written = save_key(&self.step_dir, &format!("written/{p}"));
                let said = group.get(&written, SAVE_WAIT_TIMEOUT).map_err(|e| self.processes_err(e.to_string()))?;
                if let Some(why) = String::from_utf8_lossy(&said).strip_prefix("error:") {
                    return Err(self.processes_err(format!("process {p} could not write its shards: {why}")));
                }
                dbs.push((p, ProcessDb::read(&items.join(process_dir_name(p)))?));
            }
            self.write_metadata(&dbs)?;
            self.commit_dir()
        })();
        let said = match &merged {
            Ok(dir) => format!("ok:{dir}"),
            Err(e) => format!("error:{e}"),
        };
        self.signalled = true;
        group.put(&save_key(&self.step_dir, "committed"), said.as_bytes()).map_err(|e| self.processes_err(e.to_string()))?;
        merged
    }

    /// Renames the finished temporary directory into place (locally) and marks the writer done.
    fn commit_dir(&mut self) -> Result<Location> {
        if let (Some(tmp), Some(step)) = (self.tmp.as_local(), self.step_dir.as_local()) {
            if step.exists() {
                return Err(OrbaxError::StepExists { path: self.step_dir.clone() });
            }
            std::fs::rename(tmp, step).map_err(|e| {
                let source = crate::storage::StorageError::Io { op: "rename into", loc: self.step_dir.to_string(), source: e };
                OrbaxError::Write { path: self.step_dir.clone(), source }
            })?;
            sync_dir(&self.root)?;
        }
        self.done = true;
        tracing::info!(leaves = self.leaves.len(), dir = %self.step_dir, "saved orbax checkpoint");
        Ok(self.step_dir.clone())
    }

    /// This process's `array_metadatas/process_<i>` and its database's directories, synced.
    fn write_array_metadatas(&self) -> Result<()> {
        let items = self.tmp.join("items");
        let array_metadatas = self.leaves.iter().filter_map(|l| l.array_metadata.clone()).collect();
        let am = PyJson::obj([("array_metadatas", PyJson::Arr(array_metadatas))]).render();
        let dir = items.join(ARRAY_METADATAS_DIR);
        write_file(&dir.join(format!("process_{}", self.index())), am.as_bytes())?;
        let proc_dir = items.join(process_dir_name(self.index()));
        for d in [proc_dir.join("d"), proc_dir, dir] {
            sync_dir(&d)?;
        }
        Ok(())
    }

    /// The merged root over `dbs` and the files written once: `_METADATA`, `_sharding`, the step's
    /// `_CHECKPOINT_METADATA` and the commit markers (the step's last).
    fn write_metadata(&self, dbs: &[(usize, ProcessDb)]) -> Result<()> {
        let (tmp, opts) = (&self.tmp, &self.opts);
        let items = tmp.join("items");
        write_merged_root(&items, dbs)?;
        let tree: Vec<(Vec<PathKey>, &str, Vec<u64>)> =
            self.leaves.iter().map(|l| (l.path.clone(), l.value_type, l.write_shape.clone())).collect();
        write_file(&items.join(METADATA_FILE), render_tree_metadata(&tree, true, &Value::Null).as_bytes())?;
        let default_sharding = match opts.sharding {
            ShardingRecord::SingleDeviceCpu0 => Some(PyJson::obj([
                ("sharding_type", PyJson::Str("SingleDeviceSharding".into())),
                ("device_str", PyJson::Str("cpu:0".into())),
            ])),
            ShardingRecord::NamedDevice0 => Some(PyJson::obj([
                ("sharding_type", PyJson::Str("NamedSharding".into())),
                ("shape", PyJson::ints(&[1])),
                ("axis_names", PyJson::Arr(vec![PyJson::Str("data".into())])),
                ("partition_spec", PyJson::Arr(vec![])),
                ("device_mesh", PyJson::obj([("mesh", PyJson::Arr(vec![PyJson::obj([("id", PyJson::Int(0))])]))])),
            ])),
            ShardingRecord::NoneNumpy => None,
        };
        let records: Vec<(String, PyJson)> = self
            .leaves
            .iter()
            .filter(|l| l.array_metadata.is_some())
            .filter_map(|l| Some((leaf_name(&l.path), l.sharding.clone().or_else(|| default_sharding.clone())?)))
            .collect();
        if !records.is_empty() {
            write_file(&items.join(SHARDING_FILE), render_sharding(&records).as_bytes())?;
        }
        let commit = |dir: &Location| format!("Checkpoint commit was successful to {dir}");
        write_file(&items.join(COMMIT_FILE), commit(&self.step_dir.join("items")).as_bytes())?;
        let ckpt_md = PyJson::obj([
            ("item_handlers", PyJson::obj([("items", PyJson::Str(HANDLER.into()))])),
            ("metrics", PyJson::Obj(vec![])),
            ("performance_metrics", PyJson::Obj(vec![])),
            ("init_timestamp_nsecs", PyJson::Int(self.init_ns as i64)),
            ("commit_timestamp_nsecs", PyJson::Int(now_ns() as i64)),
            ("custom_metadata", PyJson::Value(opts.custom_metadata.clone())),
        ]);
        write_file(&tmp.join(CHECKPOINT_METADATA_FILE), ckpt_md.render().as_bytes())?;
        // Last: on GCS this object is what makes the step exist.
        write_file(&tmp.join(COMMIT_FILE), commit(&self.step_dir).as_bytes())?;
        for d in [items.join("d"), items, tmp.clone()] {
            sync_dir(&d)?;
        }
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    /// An unfinished (failed or abandoned) save removes what it wrote (the temporary directory locally, the
    /// uncommitted objects on GCS). Saving with other processes, the directory is process 0's to remove
    /// (the others' files in it go with it), and a process that stops early tells the others, who would
    /// otherwise wait for it until the save's timeout.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let (Some(g), false) = (&self.group, self.signalled) {
            let what = if self.is_primary() { "committed".to_string() } else { format!("written/{}", g.index()) };
            let _ = g.put(&save_key(&self.step_dir, &what), b"error:the save stopped before it finished (see that process's log)");
        }
        if self.is_primary() {
            self.db = None; // aborts an upload in flight before its prefix is cleared
            if let Err(e) = self.tmp.remove_all() {
                tracing::warn!("could not remove the unfinished save {}: {e}", self.tmp);
            }
        }
    }
}

/// The coordinator key of one save's `what` (the step directory hashed: keys are plain names).
fn save_key(step_dir: &Location, what: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(step_dir.to_string().as_bytes());
    format!("checkpoint/{}/{what}", hex(&digest[..8]))
}

/// tensorstore's `zarr.json` for orbax's codecs: compact, keys sorted.
fn zarr_json(shape: &[u64], chunks: &[u64], dtype: ZarrDType, zstd_level: i32) -> String {
    let fill = match dtype {
        ZarrDType::Bool => Value::Bool(false),
        d if d.is_float() => serde_json::json!(0.0),
        _ => serde_json::json!(0),
    };
    serde_json::to_string(&serde_json::json!({
        "chunk_grid": {"configuration": {"chunk_shape": chunks}, "name": "regular"},
        "chunk_key_encoding": {"name": "default"},
        "codecs": orbax_codecs_json(chunks, zstd_level),
        "data_type": dtype.name(),
        "fill_value": fill,
        "node_type": "array",
        "shape": shape,
        "zarr_format": 3,
    }))
    .expect("JSON")
}

/// orbax's `choose_chunk_shape` on one device: the whole array, or, above `max_bytes`, repeatedly the
/// largest dimension cut to its next smaller divisor. Zero-sized dimensions get chunk 1.
pub fn choose_chunk_shape(shape: &[u64], elem: u64, max_bytes: u64) -> Vec<u64> {
    let mut chunk: Vec<u64> = shape.iter().map(|d| (*d).max(1)).collect();
    while chunk.iter().product::<u64>() * elem > max_bytes {
        let Some((i, _)) =
            chunk.iter().enumerate().filter(|(_, c)| **c > 1).max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        let full = shape[i].max(1);
        chunk[i] = (1..chunk[i]).rev().find(|d| full.is_multiple_of(*d)).unwrap_or(1);
    }
    chunk
}

/// Chunk `g` of a C-order array, padded with zeros to the full chunk shape.
fn extract_block<'a>(data: &'a [u8], shape: &[u64], g: &[u64], chunks: &[u64], elem: usize) -> Cow<'a, [u8]> {
    if chunks == shape {
        return Cow::Borrowed(data);
    }
    let rank = shape.len();
    let mut out = vec![0u8; chunks.iter().product::<u64>() as usize * elem];
    let origin: Vec<u64> = g.iter().zip(chunks).map(|(i, c)| i * c).collect();
    let extent: Vec<u64> = origin.iter().zip(chunks).zip(shape).map(|((o, c), s)| (*c).min(s - o)).collect();
    let stride = |s: &[u64], d: usize| s[d + 1..].iter().product::<u64>();
    let run = extent[rank - 1] as usize * elem;
    for_each_index(&extent[..rank - 1], |idx| {
        let mut src = origin[rank - 1];
        let mut dst = 0;
        for d in 0..rank - 1 {
            src += (origin[d] + idx[d]) * stride(shape, d);
            dst += idx[d] * stride(chunks, d);
        }
        let (src, dst) = (src as usize * elem, dst as usize * elem);
        out[dst..dst + run].copy_from_slice(&data[src..src + run]);
    });
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
