//! The train state on device: (step, count, params, mu, nu; no moments for `sgd`) uploaded once — shard by shard, never whole
//! on the host — sharded as the train program says, and replaced by the program's donated outputs every
//! step. Only the batch goes up and the metrics come down; a checkpoint takes the state shard by shard.
//!
//! "State entry `i`" is the `i`-th array of the state groups (`STATE_GROUPS`) taken in order — step,
//! count, params…, mu…, nu… — which is also the checkpoint's leaf order.

use super::execute::{DeviceArray, RunError, Runtime};
use super::state::{device_bytes, for_each_shard, ShardSpec};
use super::HostTensor;
use crate::ir::Program;
use crate::pjrt::{Buffer, LoadedExecutable};
use crate::program::{TrainProgram, STATE_GROUPS};
use std::sync::Arc;

/// The metrics a train step returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutput {
    pub loss: f64,
    pub raw_grad_norm: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub total_weights: f64,
    /// The weighted MoE load-balancing loss (included in `loss`).
    pub moe_lb_loss: f64,
    /// The fraction of routed token copies dropped over capacity (token dropping; 0 otherwise).
    pub moe_dropped_fraction: f64,
    /// The busiest expert's routed copies against a balanced share (1 = balanced), mean over layers.
    pub moe_max_expert_load: f64,
}

pub struct Trainer<'r> {
    rt: &'r Runtime,
    tp: TrainProgram,
    exe: Arc<LoadedExecutable>,
    /// The state entries on the devices, in state-entry order.
    state: Vec<DeviceArray>,
}

/// The state groups `program` has, in `STATE_GROUPS` order.
fn present_groups(program: &Program) -> Vec<&'static str> {
    STATE_GROUPS.iter().copied().filter(|g| program.has_args(g)).collect()
}

/// The train program's argument behind each state entry.
pub fn state_args(program: &Program) -> Vec<usize> {
    present_groups(program).iter().flat_map(|g| program.args(g)).collect()
}

/// The state entries of state group `group` (e.g. the params are entries 2.. after step and count).
pub fn state_entries(program: &Program, group: &str) -> std::ops::Range<usize> {
    let before: usize = present_groups(program).iter().take_while(|g| **g != group).map(|g| program.args(g).len()).sum();
    before..before + program.args(group).len()
}

/// The state of a run that starts from `params`, group by group (the program's state groups): step 0,
/// count 0, the params, and for the Adam optimizers zero mu (in its dtype) and zero nu.
pub fn fresh_train_state(tp: &TrainProgram, params: Vec<HostTensor>) -> Vec<Vec<HostTensor>> {
    let p = &tp.program;
    let zeros = |group: &str| -> Vec<HostTensor> {
        p.args(group)
            .map(|a| {
                let ty = &p.main.params[a];
                HostTensor::from_bytes(ty.dtype, &ty.dims, vec![0u8; ty.size_bytes() as usize])
            })
            .collect()
    };
    let mut state = vec![vec![HostTensor::from_i32(&[0], &[])], vec![HostTensor::from_i32(&[0], &[])], params];
    state.extend(tp.state_groups().into_iter().filter(|g| matches!(*g, "mu" | "nu")).map(zeros));
    state
}

impl<'r> Trainer<'r> {
    /// Compiles the step and uploads `state` (the program's state groups, in order).
    pub fn new(rt: &'r Runtime, tp: TrainProgram, state: &[Vec<HostTensor>]) -> Result<Trainer<'r>, RunError> {
        let groups = tp.state_groups();
        if state.len() != groups.len() {
            return Err(RunError::Arity { program: "train_step state groups".into(), expected: groups.len(), got: state.len() });
        }
        let exe = rt.compile(&tp.program)?;
        let mut arrays = Vec::new();
        for (g, xs) in groups.iter().zip(state) {
            arrays.extend(rt.upload_group(&tp.program, &exe, g, xs)?);
        }
        Ok(Trainer { rt, tp, exe, state: arrays })
    }

    /// Compiles the step and uploads the state shard by shard: `read(i, offsets, dims)` gives the box of
    /// state entry `i` in the program's dtype. Each distinct shard is read once and no entry is ever whole
    /// on the host (unless unsharded).
    pub fn from_regions<E: From<RunError>>(
        rt: &'r Runtime,
        tp: TrainProgram,
        mut read: impl FnMut(usize, &[i64], &[i64]) -> Result<Vec<u8>, E>,
    ) -> Result<Trainer<'r>, E> {
        Self::from_uploads(rt, tp, |p, exe, arg, i| rt.upload_arg_sharded(p, exe, arg, |o: &[i64], d: &[i64]| read(i, o, d)))
    }

    /// Compiles the step and takes state entry `i`'s per-device buffers from `upload(program, exe, arg, i)`,
    /// laid out as the program's argument `arg` (e.g. the results of an on-device init).
    pub fn from_uploads<E: From<RunError>>(
        rt: &'r Runtime,
        tp: TrainProgram,
        mut upload: impl FnMut(&Program, &LoadedExecutable, usize, usize) -> Result<Vec<Buffer>, E>,
    ) -> Result<Trainer<'r>, E> {
        let exe = rt.compile(&tp.program)?;
        let devices = exe.addressable_devices().len();
        let mut state = Vec::new();
        for (i, arg) in state_args(&tp.program).into_iter().enumerate() {
            let bufs = upload(&tp.program, &exe, arg, i)?;
            if bufs.len() != devices {
                return Err(RunError::Arity { program: format!("state entry {i} buffers"), expected: devices, got: bufs.len() }.into());
            }
            state.push(bufs);
        }
        Ok(Trainer { rt, tp, exe, state })
    }

    /// The number of state entries.
    pub fn num_state(&self) -> usize {
        self.state.len()
    }

    /// The layout of state entry `i` on the devices.
    pub fn state_spec(&self, i: usize) -> ShardSpec<'_> {
        Runtime::arg_spec(&self.tp.program, state_args(&self.tp.program)[i])
    }

    /// The ids of the devices holding partition 0, 1, ... (for a checkpoint's sharding record).
    pub fn device_ids(&self) -> Vec<i64> {
        self.rt.partition_device_ids(self.tp.program.num_partitions() as usize)
    }

    /// Hands each distinct shard of state entry `i` that this process owns (all of them on one process;
    /// see [`for_each_shard`]) to `f(offsets, dims, bytes)`, one download at a time.
    pub fn for_each_state_shard<E: From<RunError>>(&self, i: usize, f: impl FnMut(&[i64], &[i64], Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let bufs: Vec<&Buffer> = self.state[i].iter().collect();
        for_each_shard(&bufs, &self.rt.local_partitions(&self.tp.program, &self.exe), self.state_spec(i), f)
    }

    /// The global rows `lo..hi` of the batch that this process's devices hold (all rows on one process),
    /// or `None` when they are not one contiguous block.
    pub fn local_batch_rows(&self) -> Option<(i64, i64)> {
        self.rt.local_batch_rows(&self.tp.program, &self.exe)
    }

    /// Bytes the state's device buffers hold.
    pub fn state_device_bytes(&self) -> Result<u64, RunError> {
        device_bytes(self.state.iter().flatten())
    }

    pub fn program(&self) -> &TrainProgram {
        &self.tp
    }

    /// The state entries of each state group, as slices of `self.state`.
    fn groups(&self) -> Vec<(&'static str, &[DeviceArray])> {
        let mut at = 0;
        self.tp
            .state_groups()
            .into_iter()
            .map(|g| {
                let n = self.tp.program.args(g).len();
                at += n;
                (g, &self.state[at - n..at])
            })
            .collect()
    }

    /// One step on `batch` (the five batch arrays in `BATCH_KEYS` order).
    pub fn step(&mut self, batch: &[HostTensor]) -> Result<StepOutput, RunError> {
        self.step_on_rows(batch, 0)
    }

    /// One step on this process's share of the global batch: `batch` holds its rows `row0..` (the whole
    /// batch on one process). Every process of a run calls it with its own share.
    pub fn step_on_rows(&mut self, batch: &[HostTensor], row0: i64) -> Result<StepOutput, RunError> {
        let p = &self.tp.program;
        let batch = self.rt.upload_group_rows(p, &self.exe, "batch", batch, row0)?;
        let mut args = self.groups();
        args.push(("batch", &batch));
        let mut outs = self.rt.execute(p, &self.exe, &args)?;
        let m: Vec<f64> = self.rt.download_group(p, &outs, "metrics")?.iter().map(|t| t.to_f64()[0]).collect();
        let out = StepOutput { loss: m[0], raw_grad_norm: m[1], grad_norm: m[2], learning_rate: m[3], total_weights: m[4], moe_lb_loss: m[5], moe_dropped_fraction: m[6], moe_max_expert_load: m[7] };
        self.state = self.tp.state_groups().iter().flat_map(|g| outs.take(g)).collect();
        Ok(out)
    }

    /// Runs `program` (compiled as `exe`; e.g. the eval step) on the current params, which it only reads,
    /// and `batch` (its `batch` group); returns its `metrics` group as f64 scalars. The program must lay
    /// its `params` out as the train step does.
    pub fn run_on_params(&self, program: &Program, exe: &LoadedExecutable, batch: &[HostTensor]) -> Result<Vec<f64>, RunError> {
        self.run_on_params_rows(program, exe, batch, 0)
    }

    /// As [`Trainer::run_on_params`] on this process's share of the batch, its rows `row0..`.
    pub fn run_on_params_rows(&self, program: &Program, exe: &LoadedExecutable, batch: &[HostTensor], row0: i64) -> Result<Vec<f64>, RunError> {
        let batch = self.rt.upload_group_rows(program, exe, "batch", batch, row0)?;
        let params = state_entries(&self.tp.program, "params");
        let outs = self.rt.execute(program, exe, &[("params", &self.state[params]), ("batch", &batch)])?;
        Ok(self.rt.download_group(program, &outs, "metrics")?.iter().map(|t| t.to_f64()[0]).collect())
    }

    /// The whole state on the host, group by group (the program's state groups): for tests and small
    /// models; a checkpoint goes shard by shard ([`Trainer::for_each_state_shard`]).
    pub fn state_to_host(&self) -> Result<Vec<Vec<HostTensor>>, RunError> {
        let p = &self.tp.program;
        let groups = self.tp.state_groups();
        let results: Vec<usize> = groups.iter().flat_map(|g| p.results(g)).collect();
        let mut flat = results.iter().zip(&self.state).map(|(&r, a)| self.rt.download(p, r, a));
        groups.iter().map(|g| flat.by_ref().take(p.args(g).len()).collect()).collect()
    }
}
