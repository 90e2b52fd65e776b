//! Model state in Orbax checkpoints, as MaxText lays it out: the parameters are the leaves
//! `params.params.<decl path with dots>` (next to `opt_state.*`, `step`, ... in a full train state).
//!
//! [`ModelCheckpoint::open`] takes what a user passes as `load_parameters_path` / `load_full_state_path`
//! (an item directory `OUT/0/items`, a step directory `OUT/0`, or a checkpoints root, whose latest step is
//! used); [`ModelCheckpoint::restore_params`] reads exactly the model's declarations, array by array,
//! each converted to its decl's dtype, after checking every shape and the `scan_layers` layout up front;
//! [`ModelCheckpoint::read_leaf`] reads any other leaf (optimizer state, step) by name.
//!
//! ```no_run
//! # use std::path::Path;
//! # use maxtext::checkpoint::params::ModelCheckpoint;
//! let cfg = maxtext::config::Config::load(Path::new("configs/base.yml"), &[]).unwrap();
//! let decls = maxtext::program::param_decls(&cfg);
//! let ckpt = ModelCheckpoint::open(Path::new("out/0/items"))?;
//! let params = ckpt.restore_params(&decls, &cfg.model)?;
//! # Ok::<(), maxtext::checkpoint::params::RestoreError>(())
//! ```

mod layout;
mod region;

use std::collections::HashSet;
use crate::storage::Location;

use serde_json::Value;

pub use layout::{decl_path, leaf_name, leaf_source, LayerLayout, LeafSource, ModelShape, PARAMS_PREFIX};

use super::hf::{convert_bytes, StackLayout};
use super::orbax::{list_steps, CheckpointWriter, OrbaxCheckpoint, OrbaxError, WriteOptions};
use crate::config::ModelConfig;
use crate::ir::DType;
use crate::nn::params::ParamDecl;
use crate::runtime::HostTensor;

/// How many names an error lists.
const LIST_AT_MOST: usize = 10;

/// Everything that can go wrong restoring a model from an Orbax checkpoint; each message names the leaf
/// or directory and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Orbax(#[from] OrbaxError),

    #[error("{path} is not an Orbax checkpoint: {reason}")]
    NotFound { path: Location, reason: String },

    #[error("checkpoint {dir} was written with scan_layers={ckpt} ({evidence}), but the model is configured with scan_layers={cfg}; pass scan_layers={ckpt}")]
    ScanLayersMismatch { dir: Location, ckpt: bool, cfg: bool, evidence: String },

    #[error("checkpoint {dir} holds no model parameters (no leaf starts with {PARAMS_PREFIX}; it has {leaves} leaves{first}); is it a MaxText checkpoint?")]
    NoParams { dir: Location, leaves: usize, first: String },

    #[error("checkpoint {dir} has no leaf {leaf} (parameter {param}, shape {dims:?}){hint}")]
    MissingLeaf { dir: Location, leaf: String, param: String, dims: Vec<i64>, hint: String },

    #[error("leaf {leaf} of {dir} has shape {actual:?}, but the model's parameter {param} has shape {expected:?}{hint}")]
    ShapeMismatch { dir: Location, leaf: String, param: String, expected: Vec<i64>, actual: Vec<i64>, hint: String },

    #[error("{count} parameter leaves of {dir} are not parameters of the configured model: {}{}{hint}", .names.join(", "), if *.count > .names.len() { ", ..." } else { "" })]
    UnusedLeaves { dir: Location, count: usize, names: Vec<String>, hint: String },

    #[error("leaf {leaf} of {dir} has dtype {from}, which cannot be converted to the parameter's {to} (only float parameters convert)")]
    DType { dir: Location, leaf: String, from: String, to: DType },
}

pub type Result<T, E = RestoreError> = std::result::Result<T, E>;

/// An Orbax checkpoint seen as MaxText model state.
#[derive(Debug)]
pub struct ModelCheckpoint {
    ckpt: OrbaxCheckpoint,
    layout: LayerLayout,
    /// `custom_metadata.scan_layers` of `_CHECKPOINT_METADATA`, when present.
    meta_scan_layers: Option<bool>,
}

/// The item directory a user-given path means: an item directory (with `_METADATA`), a step directory (with
/// `items/`), or a checkpoints root (a directory of numbered steps, or one holding `checkpoints/`): its
/// latest finished step.
pub fn resolve_item_dir(path: &Location) -> Result<Location> {
    let io = |source| OrbaxError::Io { path: path.clone(), source };
    let entries = path.list().map_err(io)?;
    let has = |name: &str| entries.iter().any(|e| e.name == name);
    if entries.is_empty() {
        if path.is_file().map_err(io)? {
            return Ok(path.clone());
        }
        return Err(RestoreError::NotFound { path: path.clone(), reason: "it does not exist".into() });
    }
    if has("_METADATA") || has("manifest.ocdbt") || path.file_name().is_some_and(|n| n == "items") {
        return Ok(path.clone());
    }
    if entries.iter().any(|e| e.name == "items" && e.is_dir) {
        return Ok(path.join("items"));
    }
    for root in [path.clone(), path.join("checkpoints")] {
        if !root.is_dir().map_err(io)? {
            continue;
        }
        if let Some(step) = list_steps(&root)?.last() {
            let items = root.join(step.to_string()).join("items");
            tracing::info!(step, dir = %items, "restoring the latest step");
            return Ok(items);
        }
    }
    Err(RestoreError::NotFound {
        path: path.clone(),
        reason: "expected an item directory (with _METADATA, e.g. OUT/0/items), a step directory (with items/) \
                 or a checkpoints root (with numbered step directories), and it is none of them"
            .into(),
    })
}

impl ModelCheckpoint {
    /// Opens what `path` means (see [`resolve_item_dir`]); reads only metadata.
    pub fn open(path: impl Into<Location>) -> Result<ModelCheckpoint> {
        let items = resolve_item_dir(&path.into())?;
        let ckpt = OrbaxCheckpoint::open(&items)?;
        let paths: Vec<String> = ckpt.leaves().iter().filter_map(|l| decl_path(&l.name)).collect();
        let layout = LayerLayout::detect(paths.iter().map(String::as_str));
        let meta_scan_layers = ckpt
            .checkpoint_metadata()
            .and_then(|m| m.get("custom_metadata").and_then(|c| c.get("scan_layers")).and_then(Value::as_bool));
        if let (Some(m), Some(l)) = (meta_scan_layers, layout.scan_layers()) {
            if m != l {
                tracing::warn!(
                    "{}: _CHECKPOINT_METADATA says scan_layers={m}, but {layout}; going by the parameters",
                    items
                );
            }
        }
        Ok(ModelCheckpoint { ckpt, layout, meta_scan_layers })
    }

    pub fn orbax(&self) -> &OrbaxCheckpoint {
        &self.ckpt
    }

    /// The item directory.
    pub fn dir(&self) -> &Location {
        self.ckpt.dir()
    }

    pub fn layout(&self) -> LayerLayout {
        self.layout
    }

    /// The `scan_layers` the checkpoint was written with: from its parameter names, else from
    /// `_CHECKPOINT_METADATA`'s `custom_metadata.scan_layers`; `None` when neither tells.
    pub fn scan_layers(&self) -> Option<bool> {
        self.layout.scan_layers().or(self.meta_scan_layers)
    }

    fn scan_evidence(&self) -> String {
        match (self.meta_scan_layers, self.layout.scan_layers()) {
            (Some(m), Some(_)) => format!("its _CHECKPOINT_METADATA says scan_layers={m} and {}", self.layout),
            (Some(m), None) => format!("its _CHECKPOINT_METADATA says scan_layers={m}"),
            _ => self.layout.to_string(),
        }
    }

    /// Errors when the checkpoint's `scan_layers` differs from `scan_layers`, saying which to pass.
    pub fn check_scan_layers(&self, scan_layers: bool) -> Result<()> {
        match self.scan_layers() {
            Some(ckpt) if ckpt != scan_layers => Err(RestoreError::ScanLayersMismatch {
                dir: self.dir().into(),
                ckpt,
                cfg: scan_layers,
                evidence: self.scan_evidence(),
            }),
            _ => Ok(()),
        }
    }

    /// Names of every leaf (parameters, optimizer state, step, ...), in flatten order.
    pub fn leaf_names(&self) -> impl Iterator<Item = &str> {
        self.ckpt.leaves().iter().map(|l| l.name.as_str())
    }

    /// Any array leaf by its orbax name (`opt_state.0.mu.params.decoder...`, `step`), as stored.
    pub fn read_leaf(&self, name: &str) -> Result<HostTensor> {
        Ok(self.ckpt.read(name)?)
    }

    /// Any float leaf converted to `dtype` (integer leaves only as their own dtype).
    pub fn read_leaf_as(&self, name: &str, dtype: DType) -> Result<HostTensor> {
        let t = self.read_leaf(name)?;
        self.convert(name, t, dtype)
    }

    /// The `step` leaf of a full train state, if there is one.
    pub fn state_step(&self) -> Result<Option<i64>> {
        if self.ckpt.leaf("step").is_none() {
            return Ok(None);
        }
        Ok(self.read_leaf("step")?.to_i64().first().copied())
    }

    fn convert(&self, leaf: &str, t: HostTensor, dtype: DType) -> Result<HostTensor> {
        if t.dtype == dtype {
            return Ok(t);
        }
        let data = convert_bytes(&t.data, t.dtype, dtype).ok_or_else(|| RestoreError::DType {
            dir: self.dir().into(),
            leaf: leaf.into(),
            from: t.dtype.to_string(),
            to: dtype,
        })?;
        Ok(HostTensor::from_bytes(dtype, &t.dims, data))
    }

    /// Checks, before any data is read, that the checkpoint holds every parameter of `decls` with its shape
    /// (and a convertible dtype), that its layer layout matches the decls' `scan_layers`, and that it has no
    /// parameter the model lacks. Returns where each decl is read from.
    pub fn plan(&self, decls: &[ParamDecl], model: &ModelConfig) -> Result<Vec<LeafSource>> {
        let dir = || self.dir().clone();
        let model_layout = LayerLayout::detect(decls.iter().map(|d| d.path.as_str()));
        if let Some(cfg_scan) = model_layout.scan_layers() {
            self.check_scan_layers(cfg_scan)?;
        }
        let param_leaves: Vec<&str> =
            self.ckpt.leaves().iter().filter(|l| l.name.starts_with(PARAMS_PREFIX)).map(|l| l.name.as_str()).collect();
        if param_leaves.is_empty() {
            let first: Vec<&str> = self.leaf_names().take(5).collect();
            let first = if first.is_empty() { String::new() } else { format!(": {}, ...", first.join(", ")) };
            return Err(RestoreError::NoParams { dir: dir(), leaves: self.ckpt.leaves().len(), first });
        }
        let interval = model.inhomogeneous_layer_cycle_interval;
        let sources: Vec<LeafSource> = decls.iter().map(|d| leaf_source(d, self.layout, interval)).collect();
        let mut used = HashSet::new();
        for (decl, src) in decls.iter().zip(&sources) {
            let want = src.leaf_dims(&decl.dims);
            for leaf in src.leaves() {
                let Some(info) = self.ckpt.leaf(leaf).filter(|l| l.is_array()) else {
                    return Err(RestoreError::MissingLeaf {
                        dir: dir(),
                        leaf: leaf.into(),
                        param: decl.path.clone(),
                        dims: want,
                        hint: self.other_model_hint(decls),
                    });
                };
                let have: Vec<i64> = info.shape.iter().flatten().map(|d| *d as i64).collect();
                if have != want {
                    return Err(RestoreError::ShapeMismatch {
                        dir: dir(),
                        leaf: leaf.into(),
                        param: decl.path.clone(),
                        expected: want,
                        actual: have,
                        hint: self.other_model_hint(decls),
                    });
                }
                let host = info.dtype.and_then(|d| d.to_host());
                let convertible = host.is_some_and(|h| h == decl.dtype || (is_float(h) && is_float(decl.dtype)));
                if !convertible {
                    return Err(RestoreError::DType {
                        dir: dir(),
                        leaf: leaf.into(),
                        from: info.dtype.map_or("?".into(), |d| d.to_string()),
                        to: decl.dtype,
                    });
                }
                used.insert(leaf.to_string());
            }
        }
        let unused: Vec<&str> = param_leaves.into_iter().filter(|l| !used.contains(*l)).collect();
        if !unused.is_empty() {
            return Err(RestoreError::UnusedLeaves {
                dir: dir(),
                count: unused.len(),
                names: unused.iter().take(LIST_AT_MOST).map(|s| s.to_string()).collect(),
                hint: self.other_model_hint(decls),
            });
        }
        Ok(sources)
    }

    /// "; the checkpoint's model has ..., the configured one ..." when the two trees differ in shape.
    fn other_model_hint(&self, decls: &[ParamDecl]) -> String {
        let leaves: Vec<(String, Vec<i64>)> = self
            .ckpt
            .leaves()
            .iter()
            .filter_map(|l| Some((decl_path(&l.name)?, l.shape.iter().flatten().map(|d| *d as i64).collect())))
            .collect();
        let ours = ModelShape::of(decls.iter().map(|d| (d.path.as_str(), d.dims.as_slice())));
        let theirs = ModelShape::of(leaves.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
        if ours == theirs {
            return String::new();
        }
        format!(
            "; the checkpoint is for another model: it has {}, while the configured model has {} (check model_name and the \
             model keys, e.g. base_num_decoder_layers, base_emb_dim, num_experts, vocab_size)",
            theirs.describe(),
            ours.describe()
        )
    }

    /// Restores every parameter of `decls`, in order (see [`ModelCheckpoint::restore_params_each`]).
    pub fn restore_params(&self, decls: &[ParamDecl], model: &ModelConfig) -> Result<Vec<HostTensor>> {
        let mut out = Vec::with_capacity(decls.len());
        self.restore_params_each(decls, model, |_, t| {
            out.push(t);
            Ok::<(), RestoreError>(())
        })?;
        Ok(out)
    }

    /// Checks the whole plan ([`ModelCheckpoint::plan`]), then reads the parameters one at a time, each
    /// converted to its decl's dtype, handing each to `f(decl index, tensor)`: only one parameter (plus its
    /// compressed bytes) is in memory at a time beyond what `f` keeps.
    pub fn restore_params_each<E: From<RestoreError>>(
        &self,
        decls: &[ParamDecl],
        model: &ModelConfig,
        mut f: impl FnMut(usize, HostTensor) -> Result<(), E>,
    ) -> Result<(), E> {
        let _span = tracing::info_span!("checkpoint", restore = %self.dir()).entered();
        let sources = self.plan(decls, model)?;
        for (i, (decl, src)) in decls.iter().zip(&sources).enumerate() {
            let t = match src {
                LeafSource::Direct(leaf) => {
                    let t = self.read_leaf(leaf)?;
                    self.convert(leaf, t, decl.dtype)?
                }
                LeafSource::Stack { leaves, local_axis } => {
                    let elem = decl.dtype.size_bytes();
                    let dims = &decl.dims;
                    let geometry = StackLayout {
                        outer: dims[..*local_axis].iter().product::<i64>() as usize,
                        stack_total: dims[*local_axis] as usize,
                        inner_bytes: dims[local_axis + 1..].iter().product::<i64>() as usize * elem,
                    };
                    let mut full = vec![0u8; decl.num_elements() as usize * elem];
                    for (slot, leaf) in leaves.iter().enumerate() {
                        let t = self.read_leaf(leaf)?;
                        let t = self.convert(leaf, t, decl.dtype)?;
                        geometry.place(&mut full, &t.data, slot);
                    }
                    HostTensor::from_bytes(decl.dtype, dims, full)
                }
            };
            tracing::debug!(param = %decl.path, dims = ?decl.dims, "restored");
            f(i, t)?;
        }
        tracing::info!(params = decls.len(), dir = %self.dir(), "restored parameters");
        Ok(())
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F64 | DType::F32 | DType::BF16 | DType::F16)
}

/// What MaxText records in `_CHECKPOINT_METADATA` for a parameter checkpoint.
pub fn write_options(scan_layers: bool) -> WriteOptions {
    WriteOptions { custom_metadata: serde_json::json!({ "scan_layers": scan_layers }), ..WriteOptions::default() }
}

/// Saves parameters (`tensors[i]` for `decls[i]`) as MaxText's params-only checkpoint `<root>/<step>/items`
/// (leaves `params.params.*`, `custom_metadata.scan_layers`), array by array; returns the step directory.
pub fn save_params(
    root: &Location,
    step: u64,
    decls: &[ParamDecl],
    tensors: &[HostTensor],
    scan_layers: bool,
) -> Result<Location, OrbaxError> {
    let mut w = CheckpointWriter::create(root, step, write_options(scan_layers))?;
    for (decl, t) in decls.iter().zip(tensors) {
        w.add(&leaf_name(&decl.path), t)?;
    }
    w.finish()
}
