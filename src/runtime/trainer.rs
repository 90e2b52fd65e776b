//! The train state on device: (step, count, params, mu, nu) uploaded once, sharded as the train program
//! says, and replaced by the program's donated outputs every step. Only the batch goes up and the metrics
//! come down; the whole state comes to the host only for a checkpoint.

use super::execute::{RunError, Runtime};
use super::state::{device_bytes, for_each_shard, ShardSpec};
use super::HostTensor;
use crate::pjrt::{Buffer, LoadedExecutable};
use crate::program::TrainProgram;
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
}

pub struct Trainer<'r> {
    rt: &'r Runtime,
    tp: TrainProgram,
    exe: Arc<LoadedExecutable>,
    /// Per device, the state buffers (the program's first `num_state` arguments).
    state: Vec<Vec<Buffer>>,
}

/// The state of a run that starts from `params`: step 0, count 0, the params, zero mu (in `mu_dtype`) and
/// zero nu — in the train program's argument order.
pub fn fresh_train_state(tp: &TrainProgram, params: Vec<HostTensor>) -> Vec<HostTensor> {
    let zeros = |arg: usize| {
        let ty = &tp.program.main.params[arg];
        HostTensor::from_bytes(ty.dtype, &ty.dims, vec![0u8; ty.size_bytes() as usize])
    };
    let mut state = vec![HostTensor::from_i32(&[0], &[]), HostTensor::from_i32(&[0], &[])];
    state.extend(params);
    state.extend((tp.mu_at()..tp.num_state()).map(zeros));
    state
}

impl<'r> Trainer<'r> {
    /// Compiles the step and uploads `state` (step, count, params, mu, nu in the program's order).
    pub fn new(rt: &'r Runtime, tp: TrainProgram, state: &[HostTensor]) -> Result<Trainer<'r>, RunError> {
        let n = tp.num_state();
        if state.len() != n {
            return Err(RunError::Arity { program: "train_step state".into(), expected: n, got: state.len() });
        }
        let exe = rt.compile(&tp.program)?;
        let devices = exe.addressable_devices().len();
        let mut per_device: Vec<Vec<Buffer>> = (0..devices).map(|_| Vec::with_capacity(n)).collect();
        for (i, x) in state.iter().enumerate() {
            for (d, b) in rt.upload_arg(&tp.program, &exe, i, x)?.into_iter().enumerate() {
                per_device[d].push(b);
            }
        }
        Ok(Trainer { rt, tp, exe, state: per_device })
    }

    /// Compiles the step and uploads the state shard by shard: `read(i, offsets, dims)` gives the box of
    /// state entry `i` (step, count, params, mu, nu in the program's order) in the program's dtype. Each
    /// distinct shard is read once and no entry is ever whole on the host (unless unsharded).
    pub fn from_regions<E: From<RunError>>(
        rt: &'r Runtime,
        tp: TrainProgram,
        mut read: impl FnMut(usize, &[i64], &[i64]) -> Result<Vec<u8>, E>,
    ) -> Result<Trainer<'r>, E> {
        Self::from_uploads(rt, tp, |p, exe, i| rt.upload_arg_sharded(p, exe, i, |o: &[i64], d: &[i64]| read(i, o, d)))
    }

    /// Compiles the step and takes state entry `i`'s per-device buffers from `upload(program, exe, i)`
    /// (laid out as the program's argument `i`; e.g. the results of an on-device init).
    pub fn from_uploads<E: From<RunError>>(
        rt: &'r Runtime,
        tp: TrainProgram,
        mut upload: impl FnMut(&crate::ir::Program, &LoadedExecutable, usize) -> Result<Vec<Buffer>, E>,
    ) -> Result<Trainer<'r>, E> {
        let n = tp.num_state();
        let exe = rt.compile(&tp.program)?;
        let devices = exe.addressable_devices().len();
        let mut per_device: Vec<Vec<Buffer>> = (0..devices).map(|_| Vec::with_capacity(n)).collect();
        for i in 0..n {
            let bufs = upload(&tp.program, &exe, i)?;
            if bufs.len() != devices {
                return Err(RunError::Arity { program: format!("state entry {i} buffers"), expected: devices, got: bufs.len() }.into());
            }
            for (d, b) in bufs.into_iter().enumerate() {
                per_device[d].push(b);
            }
        }
        Ok(Trainer { rt, tp, exe, state: per_device })
    }

    /// The layout of state entry `i` on the devices (the train program's argument `i`).
    pub fn state_spec(&self, i: usize) -> ShardSpec<'_> {
        Runtime::arg_spec(&self.tp.program, i)
    }

    /// The ids of the devices holding partition 0, 1, ... (for a checkpoint's sharding record).
    pub fn device_ids(&self) -> Vec<i64> {
        self.exe.addressable_devices().iter().map(|d| d.id() as i64).collect()
    }

    /// Hands each distinct shard of state entry `i` to `f(offsets, dims, bytes)`, one download at a time.
    pub fn for_each_state_shard<E: From<RunError>>(&self, i: usize, f: impl FnMut(&[i64], &[i64], Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let bufs: Vec<&Buffer> = self.state.iter().map(|d| &d[i]).collect();
        for_each_shard(&bufs, self.state_spec(i), f)
    }

    /// Bytes the state's device buffers hold.
    pub fn state_device_bytes(&self) -> Result<u64, RunError> {
        device_bytes(self.state.iter().flatten())
    }

    pub fn program(&self) -> &TrainProgram {
        &self.tp
    }

    /// One step on `batch` (the five batch arrays in `BATCH_KEYS` order).
    pub fn step(&mut self, batch: &[HostTensor]) -> Result<StepOutput, RunError> {
        let p = &self.tp.program;
        let first = self.tp.num_state();
        let mut bufs: Vec<Vec<Buffer>> = Vec::with_capacity(batch.len());
        for (k, x) in batch.iter().enumerate() {
            bufs.push(self.rt.upload_arg(p, &self.exe, first + k, x)?);
        }
        let args: Vec<Vec<&Buffer>> = self
            .state
            .iter()
            .enumerate()
            .map(|(d, s)| s.iter().chain(bufs.iter().map(|b| &b[d])).collect())
            .collect();
        let mut outs = self.exe.execute(&args)?;
        let m = self.tp.metrics_at();
        let metric = |k: usize| -> Result<f64, RunError> { Ok(self.download_from(&outs, m + k)?.to_f64()[0]) };
        let out = StepOutput { loss: metric(0)?, raw_grad_norm: metric(1)?, grad_norm: metric(2)?, learning_rate: metric(3)?, total_weights: metric(4)?, moe_lb_loss: metric(5)? };
        for o in outs.iter_mut() {
            o.truncate(first);
        }
        self.state = outs;
        Ok(out)
    }

    fn download_from(&self, outs: &[Vec<Buffer>], r: usize) -> Result<HostTensor, RunError> {
        self.rt.download_result(&self.tp.program, outs, r)
    }

    /// The whole state on the host (for a checkpoint): step, count, params, mu, nu.
    pub fn state_to_host(&self) -> Result<Vec<HostTensor>, RunError> {
        let n = self.tp.num_state();
        (0..n).map(|r| self.download_from(&self.state, r)).collect()
    }
}
