//! The train step: MaxText's loss (token cross-entropy masked by `targets_segmentation`, `z_loss`),
//! gradients by reverse-mode autodiff (accumulated over `gradient_accumulation_steps` micro-batches),
//! global-norm clipping, AdamW and the learning-rate schedule — one program whose state (step, optimizer
//! count, params, mu, nu) is donated and stays on device.
//!
//! Arguments: `step`, `count` (i32), params…, mu…, nu…, then the batch (`inputs`, `inputs_position`,
//! `inputs_segmentation`, `targets`, `targets_segmentation`, i32 [batch, seq]).
//! Results: `step+1`, `count+1`, params…, mu…, nu…, then metrics: loss, raw grad norm, clipped grad norm,
//! learning rate, total weights (target tokens), weighted MoE load-balancing loss (part of the loss).

use super::forward::{matmul_precision, model_params, param_shardings};
use crate::autodiff::grad_in;
use crate::config::{Config, LrSchedule};
use crate::ir::{DType, Func, Graph, Program, Tensor, TensorType};
use crate::model::{self, ForwardInputs};
use crate::nn::ParamDecl;
use crate::optim::{adamw, clip_by_global_norm, learning_rate, AdamSlot};
use crate::sharding::{device_mesh, LogicalAxisRules};

pub const BATCH_KEYS: [&str; 5] = ["inputs", "inputs_position", "inputs_segmentation", "targets", "targets_segmentation"];
pub const METRIC_NAMES: [&str; 6] = ["loss", "raw_grad_norm", "grad_norm", "learning_rate", "total_weights", "moe_lb_loss"];

#[derive(Debug, thiserror::Error)]
pub enum TrainProgramError {
    #[error(transparent)]
    Sharding(#[from] crate::sharding::ShardingError),
    #[error("{0}")]
    Unsupported(String),
}

/// A traced train step and the position of each group of arguments/results.
pub struct TrainProgram {
    pub program: Program,
    pub decls: Vec<ParamDecl>,
}

impl TrainProgram {
    pub fn num_params(&self) -> usize {
        self.decls.len()
    }
    /// Index of the first of `n` params / mu / nu arguments (and results).
    pub fn params_at(&self) -> usize {
        2
    }
    pub fn mu_at(&self) -> usize {
        2 + self.decls.len()
    }
    pub fn nu_at(&self) -> usize {
        2 + 2 * self.decls.len()
    }
    /// Number of state arguments (step, count, params, mu, nu); the batch follows.
    pub fn num_state(&self) -> usize {
        2 + 3 * self.decls.len()
    }
    pub fn metrics_at(&self) -> usize {
        self.num_state()
    }
}

/// The loss of one (micro-)batch as a function: (batch…, params…) -> (Σ masked xent + z-loss + the
/// weighted load-balancing loss × Σ mask, Σ mask, the weighted load-balancing loss). Dividing the first by
/// the second gives MaxText's loss: token mean + `load_balance_loss_weight` · mean over layers of the
/// per-layer load-balancing loss.
pub fn loss_function(cfg: &Config, batch: i64, seq: i64) -> (Func, Vec<ParamDecl>) {
    let g = Graph::new();
    let mut pb = model_params(&g, cfg);
    // Parameters are declared while the model is traced, after the batch, so the batch comes first here.
    let bt = |g: &Graph| g.param(TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let (inputs, positions, segs, targets, tsegs) = (bt(&g), bt(&g), bt(&g), bt(&g), bt(&g));
    let fwd = ForwardInputs { tokens: inputs, positions, segment_ids: Some(segs) };
    let (logits, lb) = model::forward_with_aux(&cfg.model, &mut pb, &fwd, cfg.compute.scan_layers); // [batch, seq, vocab] f32
    let vocab = cfg.model.vocab_size as i64;
    let m = logits.max_over(&["vocab"]);
    let lse = &logits.zip_named(&m, |l, m| (l - m).exp()).sum_over(&["vocab"]).log() + &m;
    let iota = g.iota(DType::S32, &[batch, seq, vocab], 2).named(&["batch", "seq", "vocab"]);
    let hit = targets.named(&["batch", "seq"]).zip_named(&iota, |t, i| i.eq_(t));
    let target_logit = hit.select(&logits, &logits.full_like(0.0)).sum_over(&["vocab"]);
    let mut xent = &lse - &target_logit;
    if cfg.train.z_loss_multiplier != 0.0 {
        xent = &xent + &(&lse * &lse).mul_scalar(cfg.train.z_loss_multiplier);
    }
    let mask = tsegs.ne_(&tsegs.full_like(0.0));
    let w = mask.select(&xent.full_like(1.0), &xent.full_like(0.0));
    let weights = w.sum(&[0, 1]);
    let lb_term = lb.mul_scalar(cfg.train.load_balance_loss_weight);
    let mut loss_sum = (&xent * &w).sum(&[0, 1]);
    if cfg.train.load_balance_loss_weight > 0.0 && cfg.model.num_experts > 1 {
        loss_sum = &loss_sum + &(&lb_term * &weights);
    }
    (g.finish(&[loss_sum, weights, lb_term]), pb.decls)
}

/// Traces the train step for a global batch of `batch` rows of `seq` tokens.
pub fn train_program(cfg: &Config, batch: i64, seq: i64) -> Result<TrainProgram, TrainProgramError> {
    let t = &cfg.train;
    if t.lr_schedule_type != LrSchedule::Cosine {
        return Err(TrainProgramError::Unsupported(format!("lr_schedule_type={} is not traced yet; use cosine", t.lr_schedule_type.name())));
    }
    let accum = t.gradient_accumulation_steps.max(1) as i64;
    if batch % accum != 0 {
        return Err(TrainProgramError::Unsupported(format!("global batch {batch} is not divisible by gradient_accumulation_steps={accum}")));
    }
    let micro = batch / accum;
    let (loss_fn, decls) = loss_function(cfg, micro, seq);
    let n = decls.len();
    let g = Graph::new();
    let step = g.param(TensorType::scalar(DType::S32));
    let count = g.param(TensorType::scalar(DType::S32));
    let params: Vec<Tensor> = decls.iter().map(|d| g.param(TensorType::named(d.dtype, &d.dims, &d.axes))).collect();
    let mu_dtype = |d: &ParamDecl| if t.mu_dtype.is_float() { t.mu_dtype } else { d.dtype };
    let mu: Vec<Tensor> = decls.iter().map(|d| g.param(TensorType::named(mu_dtype(d), &d.dims, &d.axes))).collect();
    let nu: Vec<Tensor> = decls.iter().map(|d| g.param(TensorType::named(d.dtype, &d.dims, &d.axes))).collect();
    let batch_in: Vec<Tensor> = BATCH_KEYS.iter().map(|_| g.param(TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]))).collect();

    // The loss function takes the batch first (5 arguments), then the params.
    let wrt: Vec<usize> = (5..5 + n).collect();
    let (loss_sum, weights, lb_sum, grads) = if accum == 1 {
        let mut args = batch_in.clone();
        args.extend(params.iter().cloned());
        let (res, grads) = grad_in(&g, &loss_fn, &args, &wrt);
        (res[0].clone(), res[1].clone(), &res[2] * &res[1], grads)
    } else {
        let mut init = vec![g.scalar(0.0, DType::F32), g.scalar(0.0, DType::F32), g.scalar(0.0, DType::F32)];
        init.extend(params.iter().map(|p| g.zeros(DType::F32, p.dims())));
        let out = g.fori_loop(0, accum, &init, |bg, k, c| {
            let start = k * &bg.full(micro as f64, DType::S32, &[]);
            let zero = bg.full(0.0, DType::S32, &[]);
            let mut args: Vec<Tensor> = batch_in.iter().map(|b| b.dynamic_slice(&[start.clone(), zero.clone()], &[micro, seq])).collect();
            args.extend(params.iter().cloned());
            let (res, grads) = grad_in(bg, &loss_fn, &args, &wrt);
            let mut next = vec![&c[0] + &res[0], &c[1] + &res[1], &c[2] + &(&res[2] * &res[1])];
            next.extend(grads.iter().zip(&c[3..]).map(|(gr, acc)| acc + &gr.convert(DType::F32)));
            next
        });
        (out[0].clone(), out[1].clone(), out[2].clone(), out[3..].iter().zip(&params).map(|(gr, p)| gr.convert(p.dtype())).collect())
    };
    // MaxText: loss = Σ xent / (Σ mask + 1e-8); the gradient of the mean is the summed gradient over that.
    let denom = weights.add_scalar(1e-8);
    let loss = &loss_sum / &denom;
    let grads: Vec<Tensor> = grads.iter().map(|gr| (&gr.convert(DType::F32) / &denom.broadcast_to(gr.dims())).convert(gr.dtype())).collect();
    let (clipped, raw_norm) = clip_by_global_norm(&grads, t.gradient_clipping_threshold);
    let norm = crate::optim::global_norm(&clipped);
    let lr = learning_rate(t, &count);
    let count_inc = &count + &g.full(1.0, DType::S32, &[]);
    let slots: Vec<AdamSlot> = mu.iter().zip(&nu).map(|(m, v)| AdamSlot { mu: m.clone(), nu: v.clone() }).collect();
    let decay: Vec<bool> = decls.iter().map(|d| t.adamw_mask.is_empty() || t.adamw_mask.iter().any(|m| d.path.contains(m.as_str()))).collect();
    let (new_params, new_slots) = adamw(t, &params, &clipped, &slots, &count_inc, &lr, &decay);

    let mut outs = vec![&step + &g.full(1.0, DType::S32, &[]), count_inc];
    outs.extend(new_params);
    outs.extend(new_slots.iter().map(|s| s.mu.clone()));
    outs.extend(new_slots.iter().map(|s| s.nu.clone()));
    let lb_loss = &lb_sum / &denom;
    outs.extend([loss, raw_norm, norm, lr, weights, lb_loss]);
    let mut program = Program::new("train_step", g.finish(&outs));
    program.matmul_precision = matmul_precision(cfg);
    let tp = TrainProgram { program, decls };
    program_names_and_shardings(cfg, tp, batch, seq)
}

fn program_names_and_shardings(cfg: &Config, mut tp: TrainProgram, batch: i64, seq: i64) -> Result<TrainProgram, TrainProgramError> {
    let n = tp.decls.len();
    let p = &mut tp.program;
    p.arg_names[0] = "step".into();
    p.arg_names[1] = "opt_state.count".into();
    for (i, d) in tp.decls.iter().enumerate() {
        p.arg_names[2 + i] = format!("params/{}", d.path);
        p.arg_names[2 + n + i] = format!("mu/{}", d.path);
        p.arg_names[2 + 2 * n + i] = format!("nu/{}", d.path);
    }
    for (k, name) in BATCH_KEYS.iter().enumerate() {
        p.arg_names[2 + 3 * n + k] = name.to_string();
    }
    for a in 0..2 + 3 * n {
        p.donations[a] = Some(a);
    }
    let mesh = device_mesh(cfg)?;
    if mesh.num_devices() > 1 {
        let rules = LogicalAxisRules::from_config(cfg);
        let shardings = param_shardings(&tp.decls, &rules, &mesh);
        let p = &mut tp.program;
        for k in 0..3 {
            for (i, s) in shardings.iter().enumerate() {
                p.arg_shardings[2 + k * n + i] = Some(s.clone());
                p.result_shardings[2 + k * n + i] = Some(s.clone());
            }
        }
        let act = rules.resolve(&["activation_batch", "activation_length"], &[batch, seq], &mesh);
        for k in 0..BATCH_KEYS.len() {
            p.arg_shardings[2 + 3 * n + k] = Some(act.clone());
        }
        p.mesh = Some(mesh);
    }
    Ok(tp)
}
