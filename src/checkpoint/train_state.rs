//! The full train state as MaxText lays it out in an Orbax checkpoint (`<root>/<step>/items`): `step`,
//! `params.params.<path>`, the optimizer's `opt_state` as optax nests it ([`OptLeaves`]) — plus, in the
//! checkpoint's custom metadata, `scan_layers` and the data iterator's position, so a restarted run resumes
//! exactly.
//!
//! `opt_state` per `opt_type`:
//! - `adamw` (`optax.adamw` = chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)):
//!   `opt_state.0.{count, mu.params.<path>, nu.params.<path>}`, `opt_state.1` (EmptyState, saved as None),
//!   `opt_state.2.count` (the schedule's count);
//! - `adam_pax` (MaxText's, one `ScaleByAdamState`): `opt_state.{count, mu.params.<path>, nu.params.<path>}`;
//! - `sgd` (`optax.sgd` = chain(identity, scale_by_learning_rate)): `opt_state.0` (None),
//!   `opt_state.1.count`.

use super::nnx_aux::AuxLeaf;
use super::orbax::{list_steps, CheckpointWriter, OrbaxCheckpoint, OrbaxError, PathKey, PyJson, WriteOptions};
use crate::config::OptType;
use crate::distributed::ProcessGroup;
use crate::ir::DType;
use crate::nn::ParamDecl;
use crate::runtime::HostTensor;
use serde_json::{json, Value};
use crate::storage::Location;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TrainStateError {
    #[error(transparent)]
    Orbax(#[from] OrbaxError),
    #[error("checkpoint {dir}: leaf {leaf} is {got} but the train state needs {want}; the checkpoint is for another model or config")]
    Shape { dir: Location, leaf: String, got: String, want: String },
    #[error("checkpoint {dir} was written with scan_layers={ckpt} but the config says scan_layers={cfg}; pass scan_layers={ckpt}")]
    ScanLayers { dir: Location, ckpt: bool, cfg: bool },
    #[error(
        "checkpoint {dir} holds the optimizer state of opt_type={ckpt} but the config says opt_type={cfg}; pass \
         opt_type={ckpt} to resume it, or start a new run_name with load_parameters_path={dir} to take only its parameters"
    )]
    Optimizer { dir: Location, ckpt: OptType, cfg: OptType },
}

/// Where an optimizer's state lies in the checkpoint (orbax leaf names, see the module docs).
pub struct OptLeaves {
    /// The optimizer count (the program's `opt_count`).
    pub count: &'static str,
    /// Prefixes of the moments (`None` for `sgd`).
    pub mu: Option<&'static str>,
    pub nu: Option<&'static str>,
    /// Another leaf holding the same count (optax.adamw's schedule state).
    pub schedule_count: Option<&'static str>,
    /// An optax `EmptyState` in the chain, saved as None.
    pub empty: Option<&'static str>,
}

impl OptLeaves {
    pub fn of(opt: OptType) -> OptLeaves {
        match opt {
            OptType::AdamPax => OptLeaves { count: "opt_state.count", mu: Some("opt_state.mu.params"), nu: Some("opt_state.nu.params"), schedule_count: None, empty: None },
            OptType::Sgd => OptLeaves { count: "opt_state.1.count", mu: None, nu: None, schedule_count: None, empty: Some("opt_state.0") },
            // Muon is refused when the config loads; adamw's layout is the default.
            OptType::AdamW | OptType::Muon => OptLeaves {
                count: "opt_state.0.count",
                mu: Some("opt_state.0.mu.params"),
                nu: Some("opt_state.0.nu.params"),
                schedule_count: Some("opt_state.2.count"),
                empty: Some("opt_state.1"),
            },
        }
    }
}

/// The optimizer whose state checkpoint `ck` holds (for a model with first parameter `first`), if any of
/// the three layouts is there.
fn checkpoint_opt_type(ck: &OrbaxCheckpoint, first: &ParamDecl) -> Option<OptType> {
    [OptType::AdamW, OptType::AdamPax, OptType::Sgd].into_iter().find(|&opt| {
        let l = OptLeaves::of(opt);
        ck.leaf(l.count).is_some() && l.mu.is_none_or(|mu| ck.leaf(&leaf_name(mu, &first.path)).is_some())
    })
}

/// Orbax leaf name of a parameter path under a prefix: `params.params.decoder.decoder_norm.scale`.
pub fn leaf_name(prefix: &str, path: &str) -> String {
    format!("{prefix}.{}", path.replace('/', "."))
}

/// Leaf names of the train state in `TrainProgram` state order: step, count, params, then for the Adam
/// optimizers mu, nu.
pub fn state_leaf_names(decls: &[ParamDecl], opt: OptType) -> Vec<String> {
    let l = OptLeaves::of(opt);
    let mut names = vec!["step".to_string(), l.count.to_string()];
    for prefix in [Some("params.params"), l.mu, l.nu].into_iter().flatten() {
        names.extend(decls.iter().map(|d| leaf_name(prefix, &d.path)));
    }
    names
}

/// The newest complete checkpoint step under `root` (None when there is none or no directory).
pub fn latest_step(root: &Location) -> Result<Option<u64>, TrainStateError> {
    if !root.is_dir().map_err(|source| OrbaxError::Io { path: root.clone(), source })? {
        return Ok(None);
    }
    Ok(list_steps(root)?.into_iter().max())
}

/// Keeps the newest `keep` step directories under `root` and removes the older ones (orbax's
/// `max_to_keep`, MaxText's `max_num_checkpoints_to_keep`). Call it only after a save has committed, so
/// the newest kept step is complete. Returns the removed steps.
pub fn remove_old_steps(root: &Location, keep: usize) -> Result<Vec<u64>, TrainStateError> {
    let steps = list_steps(root)?;
    let old = &steps[..steps.len().saturating_sub(keep)];
    for s in old {
        let dir = root.join(s.to_string());
        // The commit marker first: a step half deleted on GCS is then unfinished, never restorable.
        let marker = dir.join(super::orbax::metadata::COMMIT_FILE);
        if dir.is_remote() {
            marker.remove_all().map_err(|source| OrbaxError::Write { path: marker.clone(), source })?;
        }
        dir.remove_all().map_err(|source| OrbaxError::Write { path: dir.clone(), source })?;
    }
    Ok(old.to_vec())
}

/// Converts a restored array to the dtype the program wants (checkpoints may hold bf16 or f32).
fn as_dtype(t: HostTensor, want: DType) -> HostTensor {
    if t.dtype == want {
        return t;
    }
    if want.is_float() {
        return HostTensor::from_f32_as(&t.to_f32(), &t.dims, want);
    }
    match want {
        DType::S32 => HostTensor::from_i32(&t.to_i64().iter().map(|&v| v as i32).collect::<Vec<_>>(), &t.dims),
        DType::S64 => HostTensor::from_i64(&t.to_i64(), &t.dims),
        _ => t,
    }
}

/// How one train-state entry lies on the devices, for a sharded save: dtype, global dims, the dims of
/// each shard and the leaf's `_sharding` record (`None`: the writer's default, a single-device record).
#[derive(Clone, Debug)]
pub struct LeafLayout {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub shard_dims: Vec<i64>,
    pub sharding: Option<PyJson>,
}

/// Receives the shards of one leaf: `put(offsets, bytes)` once per distinct shard.
pub type PutShard<'a> = dyn FnMut(&[i64], &[u8]) -> Result<(), TrainStateError> + 'a;

/// A restore under another optimizer is an error that names both (when the checkpoint's is recognised).
fn check_opt_type(ck: &OrbaxCheckpoint, decls: &[ParamDecl], opt: OptType) -> Result<(), TrainStateError> {
    match (decls.first().and_then(|d| checkpoint_opt_type(ck, d)), opt) {
        (Some(saved), _) if saved != opt => {
            Err(TrainStateError::Optimizer { dir: ck.dir().clone(), ckpt: saved, cfg: opt })
        }
        _ => Ok(()),
    }
}

/// Saves the train state shard by shard: for state entry `i` (program order: step, count, params, then
/// mu, nu for the Adam optimizers) `write(i, put)` hands each distinct shard to `put`; chunks are the
/// shards, as orbax writes a sharded `jax.Array`. Only what `write` holds is on the host. With every
/// layout unsharded every chunk is a whole array. With `processes` (more than one) every process of the
/// run calls this with the shards it owns, and they write one checkpoint together
/// ([`CheckpointWriter::create_shared`]). `aux` is MaxText's `nnx_aux` subtree
/// ([`super::nnx_aux`]), written from the host: with it the tree is leaf for leaf the one MaxText saves.
#[allow(clippy::too_many_arguments)]
pub fn save_train_state_sharded<E: From<TrainStateError>>(
    root: &Location,
    step: u64,
    decls: &[ParamDecl],
    opt: OptType,
    layouts: &[LeafLayout],
    aux: &[AuxLeaf],
    data_state: &Value,
    scan_layers: bool,
    processes: Option<&Arc<ProcessGroup>>,
    mut write: impl FnMut(usize, &mut PutShard) -> Result<(), E>,
) -> Result<Location, E> {
    let _span = tracing::info_span!("checkpoint", save = step).entered();
    let leaves = OptLeaves::of(opt);
    let mut names: Vec<(String, usize)> = state_leaf_names(decls, opt).into_iter().enumerate().map(|(i, n)| (n, i)).collect();
    // optax's schedule state advances with the optimizer count.
    if let Some(c) = leaves.schedule_count {
        names.push((c.to_string(), 1));
    }
    // orbax writes leaves in key-path order; so does `write_checkpoint` (the 1-device files stay identical).
    let path_of = |n: &str| -> Vec<PathKey> {
        n.split('.').map(|s| if s.bytes().all(|b| b.is_ascii_digit()) { PathKey::Index(s.parse().unwrap()) } else { PathKey::Key(s.into()) }).collect()
    };
    names.sort_by_cached_key(|(n, _)| path_of(n));
    let meta = json!({"scan_layers": scan_layers, "data_iterator": data_state});
    let opts = WriteOptions { custom_metadata: meta, ..WriteOptions::default() };
    let shared = processes.filter(|g| g.count() > 1);
    let primary = shared.is_none_or(|g| g.is_primary());
    let mut w = match shared {
        Some(g) => CheckpointWriter::create_shared(root.clone(), step, opts, g.clone()),
        None => CheckpointWriter::create(root, step, opts),
    }
    .map_err(TrainStateError::from)?;
    // optax's `EmptyState()` in the chain, as MaxText saves it (None); without it orbax cannot rebuild the
    // `opt_state` list.
    if let Some(e) = leaves.empty {
        w.add_none(path_of(e)).map_err(TrainStateError::from)?;
    }
    // `nnx_aux` sorts before `opt_state`: written first, as orbax does. Replicated, so one whole shard.
    for a in aux {
        let v = &a.value;
        let array = w.begin_array(path_of(&a.name), v.dtype, &v.dims, &v.dims, None).map_err(TrainStateError::from)?;
        let array = if a.prng_key { array.prng_key(super::nnx_aux::KEY_IMPL) } else { array };
        if primary {
            w.put_shard(&array, &vec![0; v.dims.len()], &v.data).map_err(TrainStateError::from)?;
        }
        w.end_array(array).map_err(TrainStateError::from)?;
    }
    for (name, i) in names {
        let l = &layouts[i];
        let array = w.begin_array(path_of(&name), l.dtype, &l.dims, &l.shard_dims, l.sharding.clone()).map_err(TrainStateError::from)?;
        let mut put = |offsets: &[i64], bytes: &[u8]| -> Result<(), TrainStateError> { Ok(w.put_shard(&array, offsets, bytes)?) };
        write(i, &mut put)?;
        w.end_array(array).map_err(TrainStateError::from)?;
    }
    Ok(w.finish().map_err(TrainStateError::from)?)
}

/// The run's metadata (`scan_layers`, `data_iterator`): the step's `_CHECKPOINT_METADATA`
/// `custom_metadata`, where [`save_train_state`] puts it, else `_METADATA`'s.
fn run_metadata(ck: &OrbaxCheckpoint) -> Value {
    ck.checkpoint_metadata()
        .and_then(|m| m.get("custom_metadata").cloned())
        .filter(|m| m.is_object() && !m.as_object().unwrap().is_empty())
        .unwrap_or_else(|| ck.custom_metadata().clone())
}

/// A train-state checkpoint opened for restoring box by box (see [`TrainStateReader::read_region`]).
pub struct TrainStateReader {
    ck: OrbaxCheckpoint,
    names: Vec<String>,
    want: Vec<(DType, Vec<i64>)>,
}

impl TrainStateReader {
    /// Checks every leaf's shape against `want` (the program's (dtype, dims) per state entry) and the
    /// checkpoint's `scan_layers`; returns the reader and the saved data-iterator position. No array data
    /// are read.
    /// A checkpoint of another optimizer is an error naming both.
    pub fn open(ck: OrbaxCheckpoint, decls: &[ParamDecl], opt: OptType, want: &[(DType, Vec<i64>)], scan_layers: bool) -> Result<(TrainStateReader, Value), TrainStateError> {
        let dir = ck.dir().clone();
        let meta = run_metadata(&ck);
        if let Some(saved) = meta.get("scan_layers").and_then(Value::as_bool) {
            if saved != scan_layers {
                return Err(TrainStateError::ScanLayers { dir, ckpt: saved, cfg: scan_layers });
            }
        }
        check_opt_type(&ck, decls, opt)?;
        let names = state_leaf_names(decls, opt);
        for (name, (dtype, dims)) in names.iter().zip(want) {
            let info = ck.leaf(name).ok_or_else(|| OrbaxError::NoSuchLeaf { dir: dir.clone(), name: name.clone(), hint: String::new() })?;
            let got: Vec<i64> = info.shape.iter().flatten().map(|d| *d as i64).collect();
            if &got != dims || !info.is_array() {
                let stored = info.dtype.map_or("?".to_string(), |d| d.to_string());
                return Err(TrainStateError::Shape { dir, leaf: name.clone(), got: format!("{stored}{got:?}"), want: format!("{dtype}{dims:?}") });
            }
        }
        let data = meta.get("data_iterator").cloned().unwrap_or(Value::Null);
        Ok((TrainStateReader { ck, names, want: want.to_vec() }, data))
    }

    /// The box at `offsets` of shape `dims` of state entry `i`, in the program's dtype.
    pub fn read_region(&self, i: usize, offsets: &[i64], dims: &[i64]) -> Result<Vec<u8>, TrainStateError> {
        let u = |v: &[i64]| v.iter().map(|x| *x as u64).collect::<Vec<_>>();
        let name = &self.names[i];
        let t = self.ck.read_region(name, &u(offsets), &u(dims))?.into_host(name)?;
        Ok(as_dtype(t, self.want[i].0).data)
    }

    /// The checkpoint being read (e.g. for its `nnx_aux` leaves, [`super::nnx_aux::carried`]).
    pub fn checkpoint(&self) -> &OrbaxCheckpoint {
        &self.ck
    }

    /// The step the checkpoint was saved at (its `step` leaf).
    pub fn step(&self) -> Result<i64, TrainStateError> {
        Ok(self.ck.read("step")?.to_i64()[0])
    }
}

/// How each state entry of `trainer` lies on its devices, as a checkpoint records it: shards of the
/// sharding's shard shape and, on more than one device, orbax's `NamedSharding` record of the mesh.
pub fn trainer_layouts(trainer: &crate::runtime::Trainer) -> Vec<LeafLayout> {
    let ids = trainer.device_ids();
    (0..trainer.num_state())
        .map(|i| {
            let spec = trainer.state_spec(i);
            let (shard_dims, sharding) = match (spec.sharding, spec.mesh) {
                (Some(s), Some(m)) if m.num_devices() > 1 => {
                    (crate::sharding::shard_dims(spec.dims, s, m), Some(super::orbax::named_sharding_record(&m.axes, &ids, &s.dims)))
                }
                _ => (spec.dims.to_vec(), None),
            };
            LeafLayout { dtype: spec.dtype, dims: spec.dims.to_vec(), shard_dims, sharding }
        })
        .collect()
}

/// Saves `trainer`'s state and `aux` (MaxText's `nnx_aux`) as checkpoint `step` under `root`, leaf by
/// leaf and shard by shard (one shard on the host at a time; with `processes`, this process's shards of a
/// checkpoint they write together); returns the step directory.
pub fn save_trainer_state(
    trainer: &crate::runtime::Trainer,
    root: impl Into<Location>,
    step: u64,
    aux: &[AuxLeaf],
    data_state: &Value,
    scan_layers: bool,
    processes: Option<&Arc<ProcessGroup>>,
) -> Result<Location, SaveError> {
    let layouts = trainer_layouts(trainer);
    let decls = trainer.program().decls.clone();
    let opt = trainer.program().opt_type;
    save_train_state_sharded(&root.into(), step, &decls, opt, &layouts, aux, data_state, scan_layers, processes, |i, put| -> Result<(), SaveError> {
        trainer.for_each_state_shard(i, |o, _, bytes| -> Result<(), SaveError> { Ok(put(o, &bytes)?) })
    })
}

/// A failed save of device state: the download or the write.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    State(#[from] TrainStateError),
    #[error(transparent)]
    Run(#[from] crate::runtime::RunError),
}
