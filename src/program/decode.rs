//! The two decode programs, sharing one set of weight buffers on the device:
//! - `prefill`: arguments `inputs` (tokens, positions, segment_ids [batch, bucket], lengths [batch]), `rng`,
//!   `params`;
//! - `decode_step`: arguments `inputs` (tokens, positions [batch, 1]), `rng`, `cache`, `params`.
//!
//! Both return `token` (next token [batch]), `logits` (at each row's last token [batch, vocab]), `rng` and
//! `cache` (kv_k, kv_v, conv, rec); decode_step donates its `rng` and `cache`, so the caches are updated in
//! place. `params` are sharded alike in both, so one upload serves both; caches are sharded by MaxText's
//! cache rules (batch over `decode_batch`, KV heads over `cache_heads`).

use super::forward::{matmul_precision, model_params};
use super::layout::lay_out;
use super::sampling::sample;
use crate::config::Config;
use crate::ir::{DType, Graph, Program, Sharding, ShardingContext, Tensor, TensorType};
use crate::model::{forward_with_state, state_types, DecodeState, ForwardInputs, Pass, STATE_LOGICAL, STATE_NAMES};
use crate::nn::{ParamArg, ParamBuilder, ParamDecl};
use crate::sharding::{sharding_context, ShardingError};

/// A traced decode program and its parameters.
pub struct DecodeProgram {
    pub program: Program,
    /// The parameters as stored (stacked over scan axes): what is loaded.
    pub decls: Vec<ParamDecl>,
    /// The `params` arguments, in order: a declaration whole, or one layer of it (the layer scan is
    /// traced unrolled; the runtime splits the stacked arrays once, `crate::runtime::upload_decode_params`).
    pub args: Vec<ParamArg>,
}

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

/// Names, shardings and the mesh shared by both programs.
fn finish(cfg: &Config, ctx: &ShardingContext, g: Graph, name: &str, logits: &Tensor, rng: &Tensor, st: DecodeState, pb: ParamBuilder, inputs: &[&str]) -> DecodeProgram {
    let (token, rng) = sample(&cfg.decode, logits, rng);
    let groups = [("token", vec![token]), ("logits", vec![logits.clone()]), ("rng", vec![rng]), ("cache", st.into_vec())];
    let mut program = Program::new(name, g.finish_groups(&groups));
    program.matmul_precision = matmul_precision(cfg);
    program.name_args("inputs", inputs.iter().map(|s| s.to_string()));
    let arg_decls = pb.arg_decls();
    program.name_args("params", arg_decls.iter().map(|d| d.path.clone()));
    program.donate_group("rng", "rng");
    shard_cache(&mut program, ctx);
    lay_out(&mut program, ctx, &arg_decls, &["params"], &[]);
    DecodeProgram { program, decls: pb.decls, args: pb.args }
}

/// Shards the `cache` result group (and argument group, where the program takes one) by MaxText's cache
/// rules ([`STATE_LOGICAL`]).
pub(super) fn shard_cache(program: &mut Program, ctx: &ShardingContext) {
    if ctx.mesh.num_devices() <= 1 {
        return;
    }
    let cache: Vec<Sharding> = program.results("cache").zip(STATE_LOGICAL).map(|(r, l)| ctx.resolve(l, &program.main.value_type(program.main.results[r]).dims)).collect();
    program.shard_results("cache", &cache);
    if program.arg_groups.iter().any(|a| a.name == "cache") {
        program.shard_args("cache", &cache);
    }
}

/// The prefill program for `batch` rows right-padded to `bucket` tokens, with caches of `max_len`.
pub fn prefill_program(cfg: &Config, batch: i64, bucket: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    let ctx = sharding_context(cfg)?;
    let g = Graph::sharded(ctx.clone());
    let tok = |g: &Graph| g.param_in("inputs", TensorType::named(DType::S32, &[batch, bucket], &["batch", "seq"]));
    let (tokens, positions, segment_ids) = (tok(&g), tok(&g), tok(&g));
    let lengths = g.param_in("inputs", TensorType::named(DType::S32, &[batch], &["batch"]));
    let rng = g.param_in("rng", rng_type());
    let mut pb = model_params(&g, cfg);
    let types = state_types(&cfg.model, cfg.compute.dtype, batch, max_len);
    let state = DecodeState::from_vec(types.iter().map(|t| g.zeros(t.dtype, &t.dims).with_axes(&t.axes)).collect());
    let inputs = ForwardInputs { tokens, positions, segment_ids: Some(segment_ids.clone()) };
    let pass = Pass::Prefill { segment_ids: &segment_ids, lengths: &lengths };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, pass, state, cfg.compute.scan_layers);
    let logits = last_logits(&logits, &lengths);
    Ok(finish(cfg, &ctx, g, "prefill", &logits, &rng, st, pb, &["tokens", "positions", "segment_ids", "lengths"]))
}

/// The decode-step program: one token per row, caches of `max_len` positions.
pub fn decode_program(cfg: &Config, batch: i64, max_len: i64) -> Result<DecodeProgram, ShardingError> {
    let ctx = sharding_context(cfg)?;
    // Traced without activation constraints (parameters and caches keep their shardings): with them,
    // fsdp=2 x tensor=2 x expert=2 on 8 XLA CPU devices decodes wrong tokens after a correct prefill, while
    // every 2- and 4-device mesh is right; left to the partitioner until that is understood.
    let g = Graph::new();
    let tokens = g.param_in("inputs", TensorType::named(DType::S32, &[batch, 1], &["batch", "seq"]));
    let positions = g.param_in("inputs", TensorType::named(DType::S32, &[batch, 1], &["batch", "seq"]));
    let rng = g.param_in("rng", rng_type());
    let state = DecodeState::from_vec(state_types(&cfg.model, cfg.compute.dtype, batch, max_len).into_iter().map(|t| g.param_in("cache", t)).collect());
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    let (logits, st) = forward_with_state(&cfg.model, &mut pb, &inputs, Pass::Decode, state, cfg.compute.scan_layers);
    let (b, v) = (logits.dims()[0], logits.dims()[2]);
    let logits = logits.reshape(&[b, v]).named(&["batch", "vocab"]);
    let mut dp = finish(cfg, &ctx, g, "decode_step", &logits, &rng, st, pb, &["tokens", "positions"]);
    dp.program.name_args("cache", STATE_NAMES.iter().map(|s| s.to_string()));
    dp.program.donate_group("cache", "cache");
    Ok(dp)
}

/// The program that splits the stacked parameters a decode program takes by layer ([`DecodeProgram::args`]).
/// Argument group `params`: the declarations `decls` (indices into the decode program's), laid out as
/// stored; result group `layers`: one array per entry of `args` (indices of the decode program's `params`
/// arguments), laid out as the decode program takes them.
pub struct SplitProgram {
    pub program: Program,
    pub decls: Vec<usize>,
    pub args: Vec<usize>,
}

/// The [`SplitProgram`] of `dp`, or `None` when `dp` takes every parameter whole.
pub fn split_layers_program(cfg: &Config, dp: &DecodeProgram) -> Result<Option<SplitProgram>, ShardingError> {
    let split: Vec<usize> = (0..dp.args.len()).filter(|&k| !dp.args[k].layer.is_empty()).collect();
    if split.is_empty() {
        return Ok(None);
    }
    let ctx = sharding_context(cfg)?;
    let mut decls: Vec<usize> = split.iter().map(|&k| dp.args[k].decl).collect();
    decls.sort_unstable();
    decls.dedup();
    let g = Graph::new();
    let stacked: Vec<Tensor> = decls.iter().map(|&i| {
        let d = &dp.decls[i];
        g.param_in("params", TensorType::named(d.dtype, &d.dims, &d.axes))
    }).collect();
    let layers: Vec<Tensor> = split.iter().map(|&k| {
        let a = &dp.args[k];
        let d = &dp.decls[a.decl];
        let at = d.scan_position();
        let x = &stacked[decls.binary_search(&a.decl).unwrap()];
        let x = a.layer.iter().enumerate().fold(x.clone(), |x, (s, &i)| x.slice_dim(at + s, i, 1));
        x.reshape(&d.layer_dims())
    }).collect();
    let mut program = Program::new("split_layers", g.finish_groups(&[("layers", layers)]));
    let in_decls: Vec<ParamDecl> = decls.iter().map(|&i| dp.decls[i].clone()).collect();
    let out_decls: Vec<ParamDecl> = split.iter().map(|&k| dp.decls[dp.args[k].decl].layer_decl(&dp.args[k].layer)).collect();
    program.name_args("params", in_decls.iter().map(|d| d.path.clone()));
    lay_out(&mut program, &ctx, &in_decls, &["params"], &[]);
    if ctx.mesh.num_devices() > 1 {
        program.shard_results("layers", &super::layout::param_shardings(&out_decls, &ctx));
    }
    Ok(Some(SplitProgram { program, decls, args: split }))
}
