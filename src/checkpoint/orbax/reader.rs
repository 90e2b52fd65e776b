//! Reading an Orbax item directory: `OrbaxCheckpoint::open` reads the metadata of every leaf; array data
//! are read one array at a time, only when asked for.

use std::collections::HashMap;
use crate::storage::Location;

use serde_json::Value;

use super::dtype::ZarrDType;
use super::kvstore::KvStore;
use super::metadata::{
    read_json, read_prng_impls, read_sharding, read_strings, LeafKind, PathKey, TreeEntry, TreeMetadata,
    CHECKPOINT_METADATA_FILE, COMMIT_FILE, METADATA_FILE, SHARDING_FILE, STRINGS_FILE,
};
use super::ocdbt::{OcdbtDatabase, MANIFEST_FILE};
use super::zarr::{read_array, ArrayCtx, ArrayMeta};
use super::{OrbaxError, Result, TMP_MARKER};
use crate::runtime::HostTensor;

/// One leaf of the checkpoint tree.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    /// orbax's name: the key path joined with `.` (`params.params.decoder.layers.mlp.wi_0.kernel`).
    pub name: String,
    pub path: Vec<PathKey>,
    /// `_METADATA`'s value_type: `jax.Array`, `np.ndarray`, `scalar`, `string`, `None`, `Dict`, ...
    pub value_type: String,
    pub kind: LeafKind,
    /// For arrays and scalars.
    pub dtype: Option<ZarrDType>,
    pub shape: Option<Vec<u64>>,
    /// For JAX PRNG key leaves (`array_metadatas` `random_key_impl`); the array holds the key data (uint32,
    /// key shape + [impl words]).
    pub prng_key_impl: Option<String>,
}

impl LeafInfo {
    pub fn is_array(&self) -> bool {
        matches!(self.kind, LeafKind::Array | LeafKind::Scalar)
    }
}

/// A whole array as stored: any zarr dtype, native little-endian bytes in C order (int4 widened to i8).
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayData {
    pub dtype: ZarrDType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl ArrayData {
    /// The host tensor, for dtypes this crate computes with.
    pub fn into_host(self, name: &str) -> Result<HostTensor> {
        let dtype =
            self.dtype.to_host().ok_or_else(|| OrbaxError::NoHostDType { name: name.into(), dtype: self.dtype })?;
        let dims: Vec<i64> = self.shape.iter().map(|d| *d as i64).collect();
        Ok(HostTensor { dtype, dims, data: self.data })
    }
}

/// An opened item directory (OCDBT or plain files, zarr v2 or v3).
#[derive(Debug)]
pub struct OrbaxCheckpoint {
    dir: Location,
    store: KvStore,
    use_ocdbt: bool,
    use_zarr3: bool,
    /// `store_array_data_equal_to_fill_value`: every chunk must exist.
    strict: bool,
    leaves: Vec<LeafInfo>,
    metas: Vec<Option<ArrayMeta>>,
    index: HashMap<String, usize>,
    custom_metadata: Value,
    sharding: HashMap<String, Value>,
}

impl OrbaxCheckpoint {
    /// Opens `<root>/<step>/items` (the CheckpointManager / MaxText layout).
    pub fn open_step(root: impl Into<Location>, step: u64) -> Result<OrbaxCheckpoint> {
        OrbaxCheckpoint::open(root.into().join(step.to_string()).join("items"))
    }

    /// Opens an item directory: the one holding `_METADATA` (`.../<step>/items` for MaxText); a local path or
    /// `gs://bucket/...`.
    pub fn open(item_dir: impl Into<Location>) -> Result<OrbaxCheckpoint> {
        let dir: Location = item_dir.into();
        let _span = tracing::info_span!("checkpoint", dir = %dir).entered();
        if dir.to_string().contains(TMP_MARKER) {
            return Err(OrbaxError::Incomplete { path: dir, why: "its name contains .orbax-checkpoint-tmp" });
        }
        // One listing answers every "is there a ..." question below (one request on GCS).
        let entries = dir.list().map_err(super::io_err(&dir))?;
        let has = |name: &str| entries.iter().any(|e| e.name == name && !e.is_dir);
        if entries.is_empty() {
            let reason = if dir.join("items").is_dir().unwrap_or(false) {
                format!("it does not exist (is {} the directory you meant?)", dir.join("items"))
            } else {
                "it does not exist or is not a directory".to_string()
            };
            return Err(OrbaxError::NotACheckpoint { dir, reason });
        }
        if !has(METADATA_FILE) && dir.join("items").join(METADATA_FILE).is_file().unwrap_or(false) {
            return Err(OrbaxError::NotACheckpoint {
                dir: dir.clone(),
                reason: format!("it is a step directory; open {} instead", dir.join("items")),
            });
        }
        // On GCS nothing is renamed into place: orbax's writer puts the commit marker last, and a directory
        // without it is a save that did not finish (orbax `CommitFileTemporaryPath`).
        if dir.is_remote() && !has(COMMIT_FILE) {
            return Err(OrbaxError::Incomplete { path: dir, why: "it has no commit_success.txt" });
        }
        let has_manifest = has(MANIFEST_FILE);
        let md_path = dir.join(METADATA_FILE);
        let md = if has(METADATA_FILE) {
            TreeMetadata::parse(&read_json(&md_path)?, &md_path)?
        } else {
            Self::tree_without_metadata(&dir, has_manifest)?
        };
        let use_ocdbt = md.use_ocdbt.unwrap_or(has_manifest);
        let use_zarr3 = md.use_zarr3.unwrap_or(false);
        let strict = md.store_array_data_equal_to_fill_value.unwrap_or(false);
        let store = if use_ocdbt {
            if !has_manifest {
                return Err(OrbaxError::NotACheckpoint {
                    dir,
                    reason: format!(
                        "_METADATA says use_ocdbt, but there is no {MANIFEST_FILE}; the checkpoint is incomplete"
                    ),
                });
            }
            KvStore::Ocdbt(OcdbtDatabase::open(&dir)?)
        } else {
            KvStore::Files(dir.clone())
        };
        let strings =
            if has(STRINGS_FILE) { read_strings(&dir.join(STRINGS_FILE))? } else { HashMap::new() };
        let sharding = if has(SHARDING_FILE) {
            read_sharding(&dir.join(SHARDING_FILE)).unwrap_or_else(|e| {
                tracing::warn!("ignoring {SHARDING_FILE}: {e}");
                HashMap::new()
            })
        } else {
            HashMap::new()
        };
        let prng = read_prng_impls(&dir);
        let mut leaves = Vec::with_capacity(md.entries.len());
        let mut metas = Vec::with_capacity(md.entries.len());
        let mut index = HashMap::new();
        for e in &md.entries {
            let kind = e.kind(&strings);
            let meta = match kind {
                LeafKind::Array | LeafKind::Scalar => {
                    let ctx = ArrayCtx { dir: dir.clone(), array: e.name.clone() };
                    Some(ArrayMeta::load(&store, &ctx, use_zarr3)?)
                }
                _ => None,
            };
            index.insert(e.name.clone(), leaves.len());
            leaves.push(LeafInfo {
                name: e.name.clone(),
                path: e.path.clone(),
                value_type: e.value_type.clone(),
                kind,
                dtype: meta.as_ref().map(|m| m.dtype),
                shape: meta.as_ref().map(|m| m.shape.clone()),
                prng_key_impl: prng.get(&e.name).cloned(),
            });
            metas.push(meta);
        }
        tracing::debug!(leaves = leaves.len(), use_ocdbt, use_zarr3, "opened orbax checkpoint");
        Ok(OrbaxCheckpoint {
            dir,
            store,
            use_ocdbt,
            use_zarr3,
            strict,
            leaves,
            metas,
            index,
            custom_metadata: md.custom_metadata,
            sharding,
        })
    }

    /// Without `_METADATA`, orbax restores (with a target) only plain zarr v2 directories; so do we, taking
    /// every `<name>/.zarray` as a leaf.
    fn tree_without_metadata(dir: &Location, has_manifest: bool) -> Result<TreeMetadata> {
        let arrays = if has_manifest { vec![] } else { KvStore::Files(dir.clone()).zarr2_arrays() };
        if arrays.is_empty() {
            return Err(OrbaxError::MissingMetadata { dir: dir.clone() });
        }
        tracing::warn!("{dir} has no {METADATA_FILE}; reading its {} zarr v2 arrays as np.ndarray leaves", arrays.len());
        let entries = arrays
            .into_iter()
            .map(|name| TreeEntry {
                path: vec![PathKey::Key(name.clone())],
                name,
                value_type: "np.ndarray".into(),
                skip_deserialize: false,
            })
            .collect();
        Ok(TreeMetadata {
            entries,
            use_ocdbt: Some(false),
            use_zarr3: Some(false),
            store_array_data_equal_to_fill_value: Some(false),
            custom_metadata: Value::Null,
        })
    }

    pub fn dir(&self) -> &Location {
        &self.dir
    }

    pub fn use_ocdbt(&self) -> bool {
        self.use_ocdbt
    }

    pub fn use_zarr3(&self) -> bool {
        self.use_zarr3
    }

    /// `custom_metadata` of `_METADATA` (null unless the writer set it).
    pub fn custom_metadata(&self) -> &Value {
        &self.custom_metadata
    }

    /// `_CHECKPOINT_METADATA` of the item directory or, in a CheckpointManager layout, of its step directory
    /// (MaxText keeps `custom_metadata`, e.g. `{"scan_layers": true}`, there).
    pub fn checkpoint_metadata(&self) -> Option<Value> {
        [self.dir.join(CHECKPOINT_METADATA_FILE), self.dir.parent()?.join(CHECKPOINT_METADATA_FILE)]
            .iter()
            .find_map(|p| read_json(p).ok())
    }

    /// The sharding recorded for a leaf in `_sharding` (informational; reads never need it).
    pub fn sharding(&self, name: &str) -> Option<&Value> {
        self.sharding.get(name)
    }

    /// Every leaf, in JAX flatten order (dict keys sorted, sequences by index).
    pub fn leaves(&self) -> &[LeafInfo] {
        &self.leaves
    }

    pub fn leaf(&self, name: &str) -> Option<&LeafInfo> {
        self.index.get(name).map(|i| &self.leaves[*i])
    }

    fn lookup(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| OrbaxError::NoSuchLeaf {
            dir: self.dir.clone(),
            name: name.into(),
            hint: self.suggest(name),
        })
    }

    fn suggest(&self, name: &str) -> String {
        let best = self
            .leaves
            .iter()
            .map(|l| (strsim::normalized_levenshtein(&l.name, name), &l.name))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((score, n)) if score > 0.6 => format!("; did you mean {n:?}?"),
            _ => format!(" (it has {} leaves; see OrbaxCheckpoint::leaves)", self.leaves.len()),
        }
    }

    /// Reads one whole array (or scalar) with its stored dtype.
    pub fn read_array(&self, name: &str) -> Result<ArrayData> {
        let i = self.lookup(name)?;
        let leaf = &self.leaves[i];
        let Some(meta) = &self.metas[i] else {
            let kind = match &leaf.kind {
                LeafKind::String(_) => "string".to_string(),
                LeafKind::Empty(vt) => format!("{vt} (nothing stored)"),
                LeafKind::Unsupported(vt) => format!("value of unsupported type {vt}"),
                LeafKind::Array | LeafKind::Scalar => unreachable!("arrays have metadata"),
            };
            return Err(OrbaxError::NotAnArray { dir: self.dir.clone(), name: name.into(), kind });
        };
        let _span = tracing::debug_span!("checkpoint_read", array = name).entered();
        let ctx = ArrayCtx { dir: self.dir.clone(), array: name.into() };
        let data = read_array(&self.store, meta, &ctx, self.strict)?;
        Ok(ArrayData { dtype: meta.dtype, shape: meta.shape.clone(), data })
    }

    /// Reads the box at `offsets` of shape `dims` of one array (or scalar, with empty box) with its stored
    /// dtype, reading only the chunks (and parts of chunks) the box needs.
    pub fn read_region(&self, name: &str, offsets: &[u64], dims: &[u64]) -> Result<ArrayData> {
        let i = self.lookup(name)?;
        let Some(meta) = &self.metas[i] else {
            return self.read_array(name); // the error saying what the leaf is instead
        };
        let _span = tracing::debug_span!("checkpoint_read", array = name, ?offsets, ?dims).entered();
        let ctx = ArrayCtx { dir: self.dir.clone(), array: name.into() };
        let data = super::region::read_region(&self.store, meta, &ctx, self.strict, offsets, dims)?;
        Ok(ArrayData { dtype: meta.dtype, shape: dims.to_vec(), data })
    }

    /// Reads one array as a host tensor (little-endian, row-major).
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        self.read_array(name)?.into_host(name)
    }

    /// Streams the arrays whose names start with `prefix` (e.g. `"params."`), one at a time, in flatten order.
    pub fn read_selected<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = Result<(String, HostTensor)>> + 'a {
        self.leaves
            .iter()
            .filter(move |l| l.is_array() && l.name.starts_with(prefix))
            .map(move |l| self.read(&l.name).map(|t| (l.name.clone(), t)))
    }
}

/// The finished steps under a CheckpointManager root (`<root>/<step>/`), ascending. Directories still being
/// written are not steps: locally those named `*.orbax-checkpoint-tmp*`, on GCS (where orbax cannot
/// rename) those without `commit_success.txt`.
pub fn list_steps(root: impl Into<Location>) -> Result<Vec<u64>> {
    let root: Location = root.into();
    let entries = root.list().map_err(super::io_err(&root))?;
    if entries.is_empty() && !root.is_remote() && root.as_local().is_some_and(|p| !p.is_dir()) {
        let source = crate::storage::StorageError::NotFound { loc: root.to_string() };
        return Err(OrbaxError::Io { path: root, source });
    }
    let mut steps = vec![];
    for e in entries.iter().filter(|e| e.is_dir) {
        let Ok(step) = e.name.parse::<u64>() else { continue };
        if root.is_remote() && !root.join(&e.name).join(COMMIT_FILE).is_file().map_err(super::io_err(&root))? {
            tracing::warn!("{} has no {}: an unfinished save, skipped", root.join(&e.name), COMMIT_FILE);
            continue;
        }
        steps.push(step);
    }
    steps.sort_unstable();
    Ok(steps)
}
