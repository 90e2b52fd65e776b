//! The two programs of the serving engine (`src/serve`), over a decode batch of `slots` rows that requests
//! enter and leave independently (continuous batching). Both share one set of weight buffers with the
//! decode programs (parameters last, same shardings), and both donate the decode state:
//! - `prefill_insert`: one prompt right-padded to `bucket` is prefilled from a zero state and its state is
//!   written into row `slot` of the batch state; returns per-position log-probabilities of the prompt
//!   (of each next prompt token, and the best one) and the log-softmax at the last prompt token, from which
//!   the host draws the first new token. Log-softmax runs on the device so that only [bucket] numbers
//!   and one [vocab] row come back, never [bucket, vocab] logits.
//!   Arguments `inputs` (targets, tokens, positions, segment_ids [1, bucket], lengths [1], slot []),
//!   `cache`, `params`; results `logprobs` (target_logprob [1, bucket], top_logprob [1, bucket],
//!   top_id [1, bucket], last_logprobs [1, vocab]) and `cache`.
//! - `decode_slots`: one token per row for rows `0..rows` (a power of two), each at its own position (rows
//!   not in use get token 0 at position 0 and their output is ignored; a later insert overwrites the whole
//!   row). Arguments `inputs` (tokens, positions [rows, 1]), `cache`, `params`; results `logprobs`
//!   (top_id [rows], top_logprob [rows], logprobs [rows, vocab]) and `cache`. The host downloads the
//!   [rows, vocab] log-probabilities only when a row samples or asks for top-n log-probabilities.
//!
//! Both donate `cache` and shard it, and the parameters, as the decode programs do.

use super::decode::{shard_cache, DecodeProgram};
use super::forward::{matmul_precision, model_params};
use super::layout::lay_out;
use crate::config::Config;
use crate::ir::{DType, Graph, Program, Tensor, TensorType};
use crate::model::{forward_with_state, state_types, DecodeState, ForwardInputs, Pass, STATE_NAMES};
use crate::nn::ParamBuilder;
use crate::sharding::{sharding_context, ShardingError};

/// log_softmax over the last axis of `logits` (f32): `logits − max − log Σ exp(logits − max)`.
/// Returns (log-probabilities, the largest log-probability, its index).
fn log_softmax_last(logits: &Tensor) -> (Tensor, Tensor, Tensor) {
    let logits = logits.convert(DType::F32);
    let r = logits.rank();
    let dims = logits.dims().to_vec();
    let keep: Vec<i64> = (0..r as i64 - 1).collect();
    let (max, top_id) = logits.argmax(r - 1, DType::S32);
    let shifted = &logits - &max.broadcast_in_dim(&dims, &keep);
    let lse = shifted.exp().sum(&[r as i64 - 1]).log();
    let logp = &shifted - &lse.broadcast_in_dim(&dims, &keep);
    (logp, lse.neg(), top_id)
}

/// `logp[..., ids[...]]` for log-probabilities [..., vocab] and integer ids [...].
fn pick(logp: &Tensor, ids: &Tensor) -> Tensor {
    let g = logp.graph();
    let r = logp.rank();
    let dims = logp.dims().to_vec();
    let keep: Vec<i64> = (0..r as i64 - 1).collect();
    let iota = g.iota(DType::S32, &dims, r - 1);
    let hit = iota.eq_(&ids.convert(DType::S32).broadcast_in_dim(&dims, &keep));
    hit.select(logp, &logp.full_like(f64::NEG_INFINITY)).reduce_max(&[r as i64 - 1])
}

fn finish(cfg: &Config, g: Graph, name: &str, logprobs: Vec<Tensor>, cache: DecodeState, pb: ParamBuilder, inputs: &[&str]) -> Result<DecodeProgram, ShardingError> {
    let ctx = sharding_context(cfg)?;
    let mut program = Program::new(name, g.finish_groups(&[("logprobs", logprobs), ("cache", cache.into_vec())]));
    program.matmul_precision = matmul_precision(cfg);
    program.name_args("inputs", inputs.iter().map(|s| s.to_string()));
    program.name_args("cache", STATE_NAMES.iter().map(|s| s.to_string()));
    let arg_decls = pb.arg_decls();
    program.name_args("params", arg_decls.iter().map(|d| d.path.clone()));
    program.donate_group("cache", "cache");
    shard_cache(&mut program, &ctx);
    lay_out(&mut program, &ctx, &arg_decls, &["params"], &[]);
    Ok(DecodeProgram { program, decls: pb.decls, args: pb.args })
}

/// The `cache` argument group for `slots` rows.
fn cache_args(g: &Graph, cfg: &Config, slots: i64, max_len: i64) -> DecodeState {
    DecodeState::from_vec(state_types(&cfg.model, cfg.compute.dtype, slots, max_len).into_iter().map(|t| g.param_in("cache", t)).collect())
}

/// Prefills one prompt (right-padded to `bucket`) into row `slot` of a `slots`-row decode state.
pub fn prefill_insert_program(cfg: &Config, slots: i64, bucket: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    // As decode_step, traced without activation constraints (see `decode_program`).
    let g = Graph::new();
    let tok = |g: &Graph| g.param_in("inputs", TensorType::named(DType::S32, &[1, bucket], &["batch", "seq"]));
    let (targets, tokens, positions, segment_ids) = (tok(&g), tok(&g), tok(&g), tok(&g));
    let lengths = g.param_in("inputs", TensorType::named(DType::S32, &[1], &["batch"]));
    let slot = g.param_in("inputs", TensorType::scalar(DType::S32));
    let batch_state = cache_args(&g, cfg, slots, max_len);
    let mut pb = model_params(&g, cfg);
    let one = state_types(&cfg.model, cfg.compute.dtype, 1, max_len);
    let zeros = |t: &TensorType| g.zeros(t.dtype, &t.dims).with_axes(&t.axes);
    let fresh = DecodeState { kv_k: zeros(&one[0]), kv_v: zeros(&one[1]), conv: zeros(&one[2]), rec: zeros(&one[3]) };
    let inputs = ForwardInputs { tokens, positions, segment_ids: Some(segment_ids.clone()) };
    let pass = Pass::Prefill { segment_ids: &segment_ids, lengths: &lengths };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, pass, fresh, cfg.compute.scan_layers);
    let (logp, top_lp, top_id) = log_softmax_last(&logits);
    let target_lp = pick(&logp, &targets);
    let vocab = logp.dims()[2];
    let zero = g.full(0.0, DType::S32, &[]);
    let last = lengths.reshape(&[]).add_scalar(-1.0);
    let last_lp = logp.dynamic_slice(&[zero.clone(), last, zero.clone()], &[1, 1, vocab]).reshape(&[1, vocab]);
    // Row `slot` of each state array (axis 1 is the batch) becomes the prefilled row.
    let insert = |stack: &Tensor, row: &Tensor| {
        let mut starts = vec![zero.clone(); stack.rank()];
        starts[1] = slot.clone();
        stack.dynamic_update_slice(&row.convert(stack.dtype()), &starts).with_axes(&stack.ty().axes)
    };
    let cache = DecodeState {
        kv_k: insert(&batch_state.kv_k, &st.kv_k),
        kv_v: insert(&batch_state.kv_v, &st.kv_v),
        conv: insert(&batch_state.conv, &st.conv),
        rec: insert(&batch_state.rec, &st.rec),
    };
    let inputs = ["targets", "tokens", "positions", "segment_ids", "lengths", "slot"];
    finish(cfg, g, "prefill_insert", vec![target_lp, top_lp, top_id, last_lp], cache, pb, &inputs)
}

/// One decode step over rows `0..rows` of a `slots`-row state (rows past them are left as they are), each
/// at its own position. The engine fills rows lowest first and runs the smallest power of two that covers
/// the rows in use, so a lone request does not pay for the whole batch.
pub fn decode_slots_program(cfg: &Config, slots: i64, rows: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    assert!(0 < rows && rows <= slots, "decode_slots: rows {rows} of {slots}");
    let g = Graph::new();
    let tokens = g.param_in("inputs", TensorType::named(DType::S32, &[rows, 1], &["batch", "seq"]));
    let positions = g.param_in("inputs", TensorType::named(DType::S32, &[rows, 1], &["batch", "seq"]));
    let full = cache_args(&g, cfg, slots, max_len);
    let mut pb = model_params(&g, cfg);
    // Rows 0..rows of each state array (axis 1 is the batch), and back into place after the step.
    let head = |t: &Tensor| if rows == slots { t.clone() } else { t.slice_dim(1, 0, rows) };
    let state = DecodeState { kv_k: head(&full.kv_k), kv_v: head(&full.kv_v), conv: head(&full.conv), rec: head(&full.rec) };
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, Pass::Decode, state, cfg.compute.scan_layers);
    let (b, v) = (logits.dims()[0], logits.dims()[2]);
    let logits = logits.reshape(&[b, v]).named(&["batch", "vocab"]);
    let (logp, top_lp, top_id) = log_softmax_last(&logits);
    let zero = g.full(0.0, DType::S32, &[]);
    let back = |stack: &Tensor, part: &Tensor| {
        if rows == slots {
            return part.clone();
        }
        let starts = vec![zero.clone(); stack.rank()];
        stack.dynamic_update_slice(&part.convert(stack.dtype()), &starts).with_axes(&stack.ty().axes)
    };
    let cache = DecodeState { kv_k: back(&full.kv_k, &st.kv_k), kv_v: back(&full.kv_v, &st.kv_v), conv: back(&full.conv, &st.conv), rec: back(&full.rec, &st.rec) };
    finish(cfg, g, "decode_slots", vec![top_id, top_lp, logp], cache, pb, &["tokens", "positions"])
}

/// Zero decode state for `slots` rows (the engine's starting state), as host-side types.
pub fn slot_state_types(cfg: &Config, slots: i64, max_len: i64) -> [TensorType; 4] {
    state_types(&cfg.model, cfg.compute.dtype, slots, max_len)
}
