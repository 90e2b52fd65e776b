//! The two decode programs, sharing one set of weight buffers on the device:
//! - `prefill`: (tokens, positions, segment_ids [batch, bucket], lengths [batch], rng, params...) ->
//!   (next token [batch], logits at each row's last prompt token [batch, vocab], rng, kv_k, kv_v, conv, rec);
//! - `decode_step`: (tokens, positions [batch, 1], rng, kv_k, kv_v, conv, rec, params...) -> the same
//!   outputs; the rng and the four state arrays are donated, so the caches are updated in place.
//! Parameters are the last arguments of both, with the same shardings, so one upload serves both.

use super::forward::{matmul_precision, model_params, param_shardings};
use super::sampling::sample;
use crate::config::Config;
use crate::ir::{DType, Graph, Program, Sharding, Tensor, TensorType};
use crate::model::{forward_with_state, state_types, DecodeState, ForwardInputs, Pass};
use crate::nn::ParamDecl;
use crate::sharding::{device_mesh, LogicalAxisRules, ShardingError};

/// A traced decode program and where its parameters start.
pub struct DecodeProgram {
    pub program: Program,
    pub decls: Vec<ParamDecl>,
    /// Index of the first parameter argument.
    pub first_param: usize,
}

/// Outputs of both programs, in order.
pub const OUT_TOKEN: usize = 0;
pub const OUT_LOGITS: usize = 1;
pub const OUT_RNG: usize = 2;
/// kv_k, kv_v, conv, rec follow.
pub const OUT_STATE: usize = 3;

fn rng_type() -> TensorType {
    TensorType::new(DType::U64, &[2])
}

/// Logits [batch, seq, vocab] at position `lengths[b] − 1` of each row -> [batch, vocab].
fn last_logits(logits: &Tensor, lengths: &Tensor) -> Tensor {
    let g = logits.graph();
    let (b, s) = (logits.dims()[0], logits.dims()[1]);
    let last = lengths.named(&["batch"]).add_scalar(-1.0);
    let pos = g.iota(DType::S32, &[b, s], 1).named(&["batch", "seq"]);
    let hit = last.zip_named(&pos, |l, p| p.eq_(l));
    let w = hit.select(&hit.full_like(1.0).convert(DType::F32), &hit.full_like(0.0).convert(DType::F32));
    w.dot(&logits.named(&["batch", "seq", "vocab"]), &["seq"])
}

fn finish(cfg: &Config, g: Graph, name: &str, outputs: Vec<Tensor>, decls: Vec<ParamDecl>, first_param: usize, arg_names: &[&str], donate: &[(usize, usize)]) -> Result<DecodeProgram, ShardingError> {
    let mut program = Program::new(name, g.finish(&outputs));
    program.matmul_precision = matmul_precision(cfg);
    for (i, n) in arg_names.iter().enumerate() {
        program.arg_names[i] = n.to_string();
    }
    for (i, d) in decls.iter().enumerate() {
        program.arg_names[first_param + i] = d.path.clone();
    }
    for &(a, r) in donate {
        program = program.donate(a, r);
    }
    let mesh = device_mesh(cfg)?;
    if mesh.num_devices() > 1 {
        let rules = LogicalAxisRules::from_config(cfg);
        for (i, s) in param_shardings(&decls, &rules, &mesh).into_iter().enumerate() {
            program.arg_shardings[first_param + i] = Some(s);
        }
        // Decode state stays replicated across devices for now: it is small next to the weights on the
        // configs decoded here, and keeps prefill and decode layouts trivially equal.
        let rep = |t: &TensorType| Sharding::replicated(t.rank());
        for r in 0..program.result_shardings.len() {
            let ty = program.main.value_type(program.main.results[r]).clone();
            program.result_shardings[r] = Some(rep(&ty));
        }
        program = program.with_mesh(mesh);
    }
    Ok(DecodeProgram { program, decls, first_param })
}

fn outputs(cfg: &Config, logits: &Tensor, rng: &Tensor, st: DecodeState) -> Vec<Tensor> {
    let (token, rng) = sample(&cfg.decode, logits, rng);
    vec![token, logits.clone(), rng, st.kv_k, st.kv_v, st.conv, st.rec]
}

/// The prefill program for `batch` rows right-padded to `bucket` tokens, with caches of `max_len`.
pub fn prefill_program(cfg: &Config, batch: i64, bucket: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    let g = Graph::new();
    let tok = |g: &Graph| g.param(TensorType::named(DType::S32, &[batch, bucket], &["batch", "seq"]));
    let (tokens, positions, segment_ids) = (tok(&g), tok(&g), tok(&g));
    let lengths = g.param(TensorType::named(DType::S32, &[batch], &["batch"]));
    let rng = g.param(rng_type());
    let mut pb = model_params(&g, cfg);
    let [kt, vt, ct, rt] = state_types(&cfg.model, cfg.compute.dtype, batch, max_len);
    let zeros = |t: &TensorType| g.zeros(t.dtype, &t.dims).with_axes(&t.axes);
    let state = DecodeState { kv_k: zeros(&kt), kv_v: zeros(&vt), conv: zeros(&ct), rec: zeros(&rt) };
    let inputs = ForwardInputs { tokens, positions, segment_ids: Some(segment_ids.clone()) };
    let pass = Pass::Prefill { segment_ids: &segment_ids, lengths: &lengths };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, pass, state, cfg.compute.scan_layers);
    let logits = last_logits(&logits, &lengths);
    let outs = outputs(cfg, &logits, &rng, st);
    finish(cfg, g, "prefill", outs, pb.decls, 5, &["tokens", "positions", "segment_ids", "lengths", "rng"], &[(4, OUT_RNG)])
}

/// The decode-step program: one token per row, caches of `max_len` positions.
pub fn decode_program(cfg: &Config, batch: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    let g = Graph::new();
    let tokens = g.param(TensorType::named(DType::S32, &[batch, 1], &["batch", "seq"]));
    let positions = g.param(TensorType::named(DType::S32, &[batch, 1], &["batch", "seq"]));
    let rng = g.param(rng_type());
    let [kt, vt, ct, rt] = state_types(&cfg.model, cfg.compute.dtype, batch, max_len);
    let state = DecodeState { kv_k: g.param(kt), kv_v: g.param(vt), conv: g.param(ct), rec: g.param(rt) };
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, Pass::Decode, state, cfg.compute.scan_layers);
    let (b, v) = (logits.dims()[0], logits.dims()[2]);
    let logits = logits.reshape(&[b, v]).named(&["batch", "vocab"]);
    let outs = outputs(cfg, &logits, &rng, st);
    let donate: Vec<(usize, usize)> = (0..5).map(|k| (2 + k, OUT_RNG + k)).collect();
    finish(cfg, g, "decode_step", outs, pb.decls, 7, &["tokens", "positions", "rng", "kv_k", "kv_v", "conv", "rec"], &donate)
}
