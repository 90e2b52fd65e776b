//! The full train state as MaxText lays it out in an Orbax checkpoint (`<root>/<step>/items`):
//! `step`, `params.params.<path>`, `opt_state.0.{count, mu.params.<path>, nu.params.<path>}` (optax
//! `ScaleByAdamState`), `opt_state.2.count` (the schedule's count) — plus, in the checkpoint's custom
//! metadata, `scan_layers` and the data iterator's position, so a restarted run resumes exactly.

use super::orbax::{list_steps, write_checkpoint, OrbaxCheckpoint, OrbaxError};
use crate::ir::DType;
use crate::nn::ParamDecl;
use crate::runtime::HostTensor;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainStateError {
    #[error(transparent)]
    Orbax(#[from] OrbaxError),
    #[error("checkpoint {dir}: leaf {leaf} is {got} but the train state needs {want}; the checkpoint is for another model or config")]
    Shape { dir: PathBuf, leaf: String, got: String, want: String },
    #[error("checkpoint {dir} was written with scan_layers={ckpt} but the config says scan_layers={cfg}; pass scan_layers={ckpt}")]
    ScanLayers { dir: PathBuf, ckpt: bool, cfg: bool },
}

/// Orbax leaf name of a parameter path under a prefix: `params.params.decoder.decoder_norm.scale`.
pub fn leaf_name(prefix: &str, path: &str) -> String {
    format!("{prefix}.{}", path.replace('/', "."))
}

/// Leaf names of the train state in `TrainProgram` state order: step, count, params, mu, nu.
pub fn state_leaf_names(decls: &[ParamDecl]) -> Vec<String> {
    let mut names = vec!["step".to_string(), "opt_state.0.count".to_string()];
    for prefix in ["params.params", "opt_state.0.mu.params", "opt_state.0.nu.params"] {
        names.extend(decls.iter().map(|d| leaf_name(prefix, &d.path)));
    }
    names
}

/// Saves the train state (in program order) as checkpoint `step` under `root`.
pub fn save_train_state(root: &Path, step: u64, decls: &[ParamDecl], state: &[HostTensor], data_state: &Value, scan_layers: bool) -> Result<PathBuf, TrainStateError> {
    let names = state_leaf_names(decls);
    let mut leaves: Vec<(String, HostTensor)> = names.into_iter().zip(state.iter().cloned()).collect();
    // optax's schedule state (`opt_state.2.count`) advances with the Adam count.
    leaves.push(("opt_state.2.count".to_string(), state[1].clone()));
    let meta = json!({"scan_layers": scan_layers, "data_iterator": data_state});
    Ok(write_checkpoint(root, step, &leaves, meta)?)
}

/// The newest complete checkpoint step under `root` (None when there is none or no directory).
pub fn latest_step(root: &Path) -> Result<Option<u64>, TrainStateError> {
    if !root.is_dir() {
        return Ok(None);
    }
    Ok(list_steps(root)?.into_iter().max())
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

/// Restores the train state of checkpoint `step` under `root` for `decls`, with `want` the program's
/// (dtype, dims) per state entry. Returns the state and the saved data-iterator position.
pub fn restore_train_state(root: &Path, step: u64, decls: &[ParamDecl], want: &[(DType, Vec<i64>)], scan_layers: bool) -> Result<(Vec<HostTensor>, Value), TrainStateError> {
    restore_train_state_from(&OrbaxCheckpoint::open_step(root, step)?, decls, want, scan_layers)
}

/// [`restore_train_state`] from an opened checkpoint (e.g. `load_full_state_path=<dir>/<step>/items`).
pub fn restore_train_state_from(ck: &OrbaxCheckpoint, decls: &[ParamDecl], want: &[(DType, Vec<i64>)], scan_layers: bool) -> Result<(Vec<HostTensor>, Value), TrainStateError> {
    let dir = ck.dir().to_path_buf();
    let meta = ck.custom_metadata().clone();
    if let Some(saved) = meta.get("scan_layers").and_then(Value::as_bool) {
        if saved != scan_layers {
            return Err(TrainStateError::ScanLayers { dir, ckpt: saved, cfg: scan_layers });
        }
    }
    let mut state = Vec::with_capacity(want.len());
    for (name, (dtype, dims)) in state_leaf_names(decls).iter().zip(want) {
        let t = ck.read(name)?;
        if &t.dims != dims {
            return Err(TrainStateError::Shape { dir, leaf: name.clone(), got: format!("{}{:?}", t.dtype, t.dims), want: format!("{dtype}{dims:?}") });
        }
        state.push(as_dtype(t, *dtype));
    }
    Ok((state, meta.get("data_iterator").cloned().unwrap_or(Value::Null)))
}
