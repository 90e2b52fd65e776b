//! `eval_step`: MaxText's eval step, the train step's loss without the backward pass or the update — the
//! same traced loss function ([`super::train::loss_function_on`]) inlined on the params, which are only
//! read (not donated: the train state stays on the devices).
//!
//! Argument groups: `params` (laid out as the train step lays them out, so the trainer's buffers bind
//! directly) and `batch` (the five `BATCH_KEYS` arrays, i32 [batch, seq]). Result group `metrics`:
//! MaxText's per-step eval scalars [`EVAL_METRIC_NAMES`]: `evaluation/total_loss` = Σ masked xent (z-loss
//! included, the load-balancing term not), `evaluation/total_weights` = Σ mask, `evaluation/moe_lb_loss`
//! (the weighted load-balancing loss, 0 when it is off), and Σ masked z-loss (the host divides it by the
//! weights for `evaluation/z_loss`, as MaxText's loss function does).

use super::forward::matmul_precision;
use super::layout::lay_out;
use super::train::{loss_function_on, BATCH_KEYS};
use crate::config::Config;
use crate::ir::{DType, Graph, Program, Tensor, TensorType};
use crate::nn::ParamDecl;
use crate::sharding::sharding_context;

/// The `metrics` results of [`eval_program`], in order.
pub const EVAL_METRIC_NAMES: [&str; 4] = ["total_loss", "total_weights", "moe_lb_loss", "z_loss_sum"];

/// A traced eval step and its parameter declarations (the order of the `params` group).
pub struct EvalProgram {
    pub program: Program,
    pub decls: Vec<ParamDecl>,
}

/// Traces the eval step for `batch` rows of `seq` tokens.
pub fn eval_program(cfg: &Config, batch: i64, seq: i64) -> Result<EvalProgram, crate::sharding::ShardingError> {
    let ctx = sharding_context(cfg)?;
    let (loss_fn, decls) = loss_function_on(cfg, &ctx, batch, seq);
    let g = Graph::sharded(ctx.clone());
    let params: Vec<Tensor> = decls.iter().map(|d| g.param_in("params", TensorType::named(d.dtype, &d.dims, &d.axes))).collect();
    let batch_in: Vec<Tensor> = BATCH_KEYS.iter().map(|_| g.param_in("batch", TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]))).collect();
    let mut args = batch_in;
    args.extend(params);
    let res = crate::autodiff::inline(&g, &loss_fn, &args);
    let (loss_sum, weights, lb_term, z_sum) = (&res[0], &res[1], &res[2], &res[5]);
    // The loss function adds the load-balancing term to the summed loss only when it is on (MaxText's
    // condition); the eval total is the cross entropy alone.
    let lb_on = cfg.train.load_balance_loss_weight > 0.0 && cfg.model.num_experts > 1;
    let (total_loss, lb) = if lb_on { (loss_sum - &(lb_term * weights), lb_term.clone()) } else { (loss_sum.clone(), g.scalar(0.0, DType::F32)) };
    let mut program = Program::new("eval_step", g.finish_groups(&[("metrics", vec![total_loss, weights.clone(), lb, z_sum.clone()])]));
    program.matmul_precision = matmul_precision(cfg);
    program.name_args("params", decls.iter().map(|d| format!("params/{}", d.path)));
    program.name_args("batch", BATCH_KEYS.iter().map(|k| k.to_string()));
    lay_out(&mut program, &ctx, &decls, &["params"], &["batch"]);
    Ok(EvalProgram { program, decls })
}
