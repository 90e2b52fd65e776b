//! The train state on device: (step, count, params, mu, nu) uploaded once, sharded as the train program
//! says, and replaced by the program's donated outputs every step. Only the batch goes up and the metrics
//! come down; the whole state comes to the host only for a checkpoint.

use super::execute::{DeviceArray, RunError, Runtime};
use super::HostTensor;
use crate::pjrt::LoadedExecutable;
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
}

pub struct Trainer<'r> {
    rt: &'r Runtime,
    tp: TrainProgram,
    exe: Arc<LoadedExecutable>,
    /// The state groups (`STATE_GROUPS`), each as its arrays on the devices.
    state: Vec<Vec<DeviceArray>>,
}

/// The state of a run that starts from `params`, group by group (`STATE_GROUPS`): step 0, count 0, the
/// params, zero mu (in `mu_dtype`) and zero nu.
pub fn fresh_train_state(tp: &TrainProgram, params: Vec<HostTensor>) -> Vec<Vec<HostTensor>> {
    let p = &tp.program;
    let zeros = |group: &str| -> Vec<HostTensor> {
        p.args(group).map(|a| {
            let ty = &p.main.params[a];
            HostTensor::from_bytes(ty.dtype, &ty.dims, vec![0u8; ty.size_bytes() as usize])
        }).collect()
    };
    vec![vec![HostTensor::from_i32(&[0], &[])], vec![HostTensor::from_i32(&[0], &[])], params, zeros("mu"), zeros("nu")]
}

impl<'r> Trainer<'r> {
    /// Compiles the step and uploads `state` (the `STATE_GROUPS`, in order).
    pub fn new(rt: &'r Runtime, tp: TrainProgram, state: &[Vec<HostTensor>]) -> Result<Trainer<'r>, RunError> {
        if state.len() != STATE_GROUPS.len() {
            return Err(RunError::Arity { program: "train_step state groups".into(), expected: STATE_GROUPS.len(), got: state.len() });
        }
        let exe = rt.compile(&tp.program)?;
        let state = STATE_GROUPS.iter().zip(state).map(|(g, xs)| rt.upload_group(&tp.program, &exe, g, xs)).collect::<Result<_, _>>()?;
        Ok(Trainer { rt, tp, exe, state })
    }

    pub fn program(&self) -> &TrainProgram {
        &self.tp
    }

    /// One step on `batch` (the five batch arrays in `BATCH_KEYS` order).
    pub fn step(&mut self, batch: &[HostTensor]) -> Result<StepOutput, RunError> {
        let p = &self.tp.program;
        let batch = self.rt.upload_group(p, &self.exe, "batch", batch)?;
        let mut args: Vec<(&str, &[DeviceArray])> = STATE_GROUPS.iter().zip(&self.state).map(|(g, s)| (*g, s.as_slice())).collect();
        args.push(("batch", &batch));
        let mut outs = self.rt.execute(p, &self.exe, &args)?;
        let m: Vec<f64> = self.rt.download_group(p, &outs, "metrics")?.iter().map(|t| t.to_f64()[0]).collect();
        let out = StepOutput { loss: m[0], raw_grad_norm: m[1], grad_norm: m[2], learning_rate: m[3], total_weights: m[4], moe_lb_loss: m[5] };
        self.state = STATE_GROUPS.iter().map(|g| outs.take(g)).collect();
        Ok(out)
    }

    /// The whole state on the host (for a checkpoint), group by group (`STATE_GROUPS`).
    pub fn state_to_host(&self) -> Result<Vec<Vec<HostTensor>>, RunError> {
        let p = &self.tp.program;
        STATE_GROUPS
            .iter()
            .zip(&self.state)
            .map(|(g, arrays)| p.results(g).zip(arrays).map(|(r, a)| self.rt.download(p, r, a)).collect())
            .collect()
    }
}
