//! The train step: MaxText's loss (token cross-entropy masked by `targets_segmentation`, `z_loss`),
//! gradients by reverse-mode autodiff (accumulated over `gradient_accumulation_steps` micro-batches),
//! global-norm clipping, AdamW and the learning-rate schedule — one program whose state (step, optimizer
//! count, params, mu, nu) is donated and stays on device.
//!
//! Argument groups: `step`, `opt_count` (i32 scalars), `params`, `mu`, `nu` (one per parameter; only for
//! the Adam optimizers: `opt_type=sgd` keeps no moments and has no such groups), `batch` (`inputs`,
//! `inputs_position`, `inputs_segmentation`, `targets`, `targets_segmentation`, i32 [batch, seq]).
//! Result groups: the state groups again (each donated by its argument group), then `metrics`: loss,
//! raw grad norm, clipped grad norm, learning rate, total weights (target tokens), weighted MoE
//! load-balancing loss (part of the loss), fraction of routed token copies dropped over capacity, the
//! busiest expert's load against a balanced one (mean over layers and micro-batches).

use super::forward::{matmul_precision, model_params};
use super::layout::lay_out;
use crate::autodiff::{grad_in, Remat};
use crate::config::{Config, OptType};
use crate::ir::{DType, Func, Graph, Program, ShardingContext, Tensor, TensorType};
use crate::model::{self, ForwardInputs};
use crate::nn::ParamDecl;
use crate::optim::{has_moments, mean_and_clip, learning_rate, weight_decay_mask, AdamSlot};
use crate::sharding::sharding_context;

pub const BATCH_KEYS: [&str; 5] = ["inputs", "inputs_position", "inputs_segmentation", "targets", "targets_segmentation"];
/// The groups a train state can have, in order; each is an argument group and the result group it is
/// donated to. A program has the ones its optimizer keeps ([`TrainProgram::state_groups`]).
pub const STATE_GROUPS: [&str; 5] = ["step", "opt_count", "params", "mu", "nu"];
/// How many values [`loss_function`] returns.
pub const LOSS_OUTPUTS: usize = 6;
pub const METRIC_NAMES: [&str; 8] = ["loss", "raw_grad_norm", "grad_norm", "learning_rate", "total_weights", "moe_lb_loss", "moe_dropped_fraction", "moe_max_expert_load"];

#[derive(Debug, thiserror::Error)]
pub enum TrainProgramError {
    #[error(transparent)]
    Sharding(#[from] crate::sharding::ShardingError),
    #[error("{0}")]
    Unsupported(String),
}

/// A traced train step and its parameter declarations (the order of the `params`, `mu` and `nu` groups).
pub struct TrainProgram {
    pub program: Program,
    pub decls: Vec<ParamDecl>,
    /// The optimizer traced into the step; it decides the state groups and the checkpoint's `opt_state`.
    pub opt_type: OptType,
}

impl TrainProgram {
    /// The state groups of this program, in `STATE_GROUPS` order (no `mu`, `nu` for `sgd`).
    pub fn state_groups(&self) -> Vec<&'static str> {
        state_groups(self.opt_type)
    }
}

/// The state groups an optimizer keeps, in `STATE_GROUPS` order.
pub fn state_groups(opt: OptType) -> Vec<&'static str> {
    STATE_GROUPS.iter().copied().filter(|g| has_moments(opt) || !matches!(*g, "mu" | "nu")).collect()
}

/// The loss of one (micro-)batch as a function: (batch…, params…) -> (Σ masked xent + z-loss + the
/// weighted load-balancing loss × Σ mask, Σ mask, the weighted load-balancing loss, the token copies
/// dropped per layer, the busiest expert's load against a balanced one, Σ masked z-loss) —
/// [`LOSS_OUTPUTS`] values; a gradient function appends the gradients after them (of the first value).
/// Dividing the first by the second gives MaxText's loss: token mean + `load_balance_loss_weight` · mean
/// over layers of the per-layer load-balancing loss.
pub fn loss_function(cfg: &Config, batch: i64, seq: i64) -> (Func, Vec<ParamDecl>) {
    let ctx = sharding_context(cfg).expect("mesh checked when the config loaded");
    loss_function_on(cfg, &ctx, batch, seq)
}

pub(crate) fn loss_function_on(cfg: &Config, ctx: &ShardingContext, batch: i64, seq: i64) -> (Func, Vec<ParamDecl>) {
    let g = Graph::sharded(ctx.clone());
    let mut pb = model_params(&g, cfg);
    // Parameters are declared while the model is traced, after the batch, so the batch comes first here.
    let bt = |g: &Graph| g.param(TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let (inputs, positions, segs, targets, tsegs) = (bt(&g), bt(&g), bt(&g), bt(&g), bt(&g));
    let fwd = ForwardInputs { tokens: inputs, positions, segment_ids: Some(segs) };
    let (logits, aux) = model::forward_for_grad(&cfg.model, &mut pb, &fwd, cfg.compute.scan_layers); // [batch, seq, vocab] f32
    let lb = aux.slice(&[0], &[1], &[1]).reshape(&[]);
    let dropped = aux.slice(&[1], &[2], &[1]).reshape(&[]);
    let max_load = aux.slice(&[2], &[3], &[1]).reshape(&[]);
    let vocab = cfg.model.vocab_size as i64;
    let m = logits.max_over(&["vocab"]);
    let lse = &logits.zip_named(&m, |l, m| (l - m).exp()).sum_over(&["vocab"]).log() + &m;
    let iota = g.iota(DType::S32, &[batch, seq, vocab], 2).named(&["batch", "seq", "vocab"]);
    let hit = targets.named(&["batch", "seq"]).zip_named(&iota, |t, i| i.eq_(t));
    let target_logit = hit.select(&logits, &logits.full_like(0.0)).sum_over(&["vocab"]);
    let mut xent = &lse - &target_logit;
    let z_loss = (&lse * &lse).mul_scalar(cfg.train.z_loss_multiplier);
    if cfg.train.z_loss_multiplier != 0.0 {
        xent = &xent + &z_loss;
    }
    let mask = tsegs.ne_(&tsegs.full_like(0.0));
    let w = mask.select(&xent.full_like(1.0), &xent.full_like(0.0));
    let weights = w.sum(&[0, 1]);
    let z_sum = (&z_loss * &w).sum(&[0, 1]);
    let lb_term = lb.mul_scalar(cfg.train.load_balance_loss_weight);
    let mut loss_sum = (&xent * &w).sum(&[0, 1]);
    if cfg.train.load_balance_loss_weight > 0.0 && cfg.model.num_experts > 1 {
        loss_sum = &loss_sum + &(&lb_term * &weights);
    }
    (g.finish(&[loss_sum, weights, lb_term, dropped, max_load, z_sum]), pb.decls)
}

/// Traces the train step for a global batch of `batch` rows of `seq` tokens.
pub fn train_program(cfg: &Config, batch: i64, seq: i64) -> Result<TrainProgram, TrainProgramError> {
    let t = &cfg.train;
    if t.opt_type == OptType::Muon {
        return Err(TrainProgramError::Unsupported("opt_type=muon is not built; use adamw, adam_pax or sgd".into()));
    }
    let accum = t.gradient_accumulation_steps.max(1) as i64;
    if batch % accum != 0 {
        return Err(TrainProgramError::Unsupported(format!("global batch {batch} is not divisible by gradient_accumulation_steps={accum}")));
    }
    let micro = batch / accum;
    let remat = Remat::saving(cfg.compute.remat_saved.iter().cloned());
    let ctx = sharding_context(cfg)?;
    let (loss_fn, decls) = loss_function_on(cfg, &ctx, micro, seq);
    let g = Graph::sharded(ctx.clone());
    let step = g.param_in("step", TensorType::scalar(DType::S32));
    let count = g.param_in("opt_count", TensorType::scalar(DType::S32));
    let params: Vec<Tensor> = decls.iter().map(|d| g.param_in("params", TensorType::named(d.dtype, &d.dims, &d.axes))).collect();
    // optax.adamw keeps mu in `mu_dtype`; adam_pax keeps both moments in the parameter's dtype; sgd none.
    let mu_dtype = |d: &ParamDecl| if t.opt_type == OptType::AdamW && t.mu_dtype.is_float() { t.mu_dtype } else { d.dtype };
    let moments = has_moments(t.opt_type);
    let mu: Vec<Tensor> = if moments { decls.iter().map(|d| g.param_in("mu", TensorType::named(mu_dtype(d), &d.dims, &d.axes))).collect() } else { Vec::new() };
    let nu: Vec<Tensor> = if moments { decls.iter().map(|d| g.param_in("nu", TensorType::named(d.dtype, &d.dims, &d.axes))).collect() } else { Vec::new() };
    let batch_in: Vec<Tensor> = BATCH_KEYS.iter().map(|_| g.param_in("batch", TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]))).collect();

    // The loss function takes the batch first, then the params: differentiate with respect to the params.
    let wrt: Vec<usize> = (0..params.len()).map(|i| BATCH_KEYS.len() + i).collect();
    let (loss_sum, weights, lb_sum, dropped, max_load, grads) = if accum == 1 {
        let mut args = batch_in.clone();
        args.extend(params.iter().cloned());
        let (res, grads) = grad_in(&g, &loss_fn, &args, &wrt, &remat);
        (res[0].clone(), res[1].clone(), &res[2] * &res[1], res[3].clone(), res[4].clone(), grads)
    } else {
        let mut init: Vec<Tensor> = (0..LOSS_OUTPUTS).map(|_| g.scalar(0.0, DType::F32)).collect();
        init.extend(params.iter().map(|p| g.zeros(DType::F32, p.dims())));
        let out = g.fori_loop(0, accum, &init, |bg, k, c| {
            let start = k * &bg.full(micro as f64, DType::S32, &[]);
            let zero = bg.full(0.0, DType::S32, &[]);
            let mut args: Vec<Tensor> = batch_in.iter().map(|b| b.dynamic_slice(&[start.clone(), zero.clone()], &[micro, seq])).collect();
            args.extend(params.iter().cloned());
            let (res, grads) = grad_in(bg, &loss_fn, &args, &wrt, &remat);
            let mut next = vec![&c[0] + &res[0], &c[1] + &res[1], &c[2] + &(&res[2] * &res[1]), &c[3] + &res[3], &c[4] + &res[4], &c[5] + &res[5]];
            next.extend(grads.iter().zip(&c[LOSS_OUTPUTS..]).map(|(gr, acc)| acc + &gr.convert(DType::F32)));
            next
        });
        let grads = out[LOSS_OUTPUTS..].iter().zip(&params).map(|(gr, p)| gr.convert(p.dtype())).collect();
        (out[0].clone(), out[1].clone(), out[2].clone(), out[3].clone(), out[4].mul_scalar(1.0 / accum as f64), grads)
    };
    // MaxText: loss = Σ xent / (Σ mask + 1e-8); the gradient of the mean is the summed gradient over that.
    let denom = weights.add_scalar(1e-8);
    let loss = &loss_sum / &denom;
    let (clipped, raw_norm, norm) = mean_and_clip(&grads, &denom, t.gradient_clipping_threshold);
    // optax evaluates the schedule at the count before this step.
    let lr = learning_rate(t, &count);
    let count_inc = &count + &g.full(1.0, DType::S32, &[]);
    let slots: Vec<AdamSlot> = mu.iter().zip(&nu).map(|(m, v)| AdamSlot { mu: m.clone(), nu: v.clone() }).collect();
    let mask: Vec<regex::Regex> = t.adamw_mask.iter().map(|m| regex::Regex::new(m).map_err(|e| TrainProgramError::Unsupported(format!("adamw_mask entry {m:?} is not a regex: {e}")))).collect::<Result<_, _>>()?;
    let decay = weight_decay_mask(&mask, decls.iter().map(|d| d.path.clone()));
    let (new_params, new_slots) = crate::optim::update(t, &params, &clipped, &slots, &count, &lr, &decay);

    let lb_loss = &lb_sum / &denom;
    // Copies dropped over capacity (per layer, summed over micro-batches) over all copies.
    let dropped_fraction = dropped.mul_scalar(1.0 / (batch * seq * cfg.model.num_experts_per_tok as i64).max(1) as f64);
    let mut groups = vec![("step", vec![&step + &g.full(1.0, DType::S32, &[])]), ("opt_count", vec![count_inc]), ("params", new_params)];
    if moments {
        groups.push(("mu", new_slots.iter().map(|s| s.mu.clone()).collect()));
        groups.push(("nu", new_slots.iter().map(|s| s.nu.clone()).collect()));
    }
    groups.push(("metrics", vec![loss, raw_norm, norm, lr, weights, lb_loss, dropped_fraction, max_load]));
    let mut program = Program::new("train_step", g.finish_groups(&groups));
    program.matmul_precision = matmul_precision(cfg);
    program.name_args("step", ["step".to_string()]);
    program.name_args("opt_count", ["opt_state.count".to_string()]);
    let sharded: Vec<&str> = state_groups(t.opt_type).into_iter().filter(|g| matches!(*g, "params" | "mu" | "nu")).collect();
    for group in &sharded {
        program.name_args(group, decls.iter().map(|d| format!("{group}/{}", d.path)));
    }
    program.name_args("batch", BATCH_KEYS.iter().map(|k| k.to_string()));
    for group in state_groups(t.opt_type) {
        program.donate_group(group, group);
    }
    lay_out(&mut program, &ctx, &decls, &sharded, &["batch"]);
    Ok(TrainProgram { program, decls, opt_type: t.opt_type })
}
