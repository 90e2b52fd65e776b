//! How routed token copies reach their experts (reference §5), for the three strategies MaxText has:
//! - dense (`sparse_matmul=false`, `capacity_factor<=0`): every expert on every token, weighted by the
//!   combine weights (zero for unselected experts); lives in `moe.rs`;
//! - token dropping (`sparse_matmul=false`, `capacity_factor>0`): per batch row each expert takes at most
//!   `capacity` copies in MaxText's priority order (token position first, then the copy's rank in the top-k);
//!   dispatch and combine are one-hot masks [batch, seq, exp, capacity], so the expert axis shards;
//! - dropless (`sparse_matmul=true`): the copies of the whole batch sorted by expert and cut into blocks of
//!   `block` rows, each block belonging to one expert (each expert's group padded to whole blocks), and one
//!   batched matmul over the blocks with each block's expert weights. Static shapes, work proportional to
//!   tokens × k (at most `tokens·k / block + experts` blocks); the CPU plugin has no ragged dot, so this is
//!   the formulation on every plugin. (Multiplying one home block per expert by the weights in place and
//!   gathering only for the overflow was measured slower inside the layer scan: a scanned layer's expert
//!   weights are a strided slice of the stack, so "in place" is a copy too, and the gather fuses it.)
//!   With fewer than two copies per expert (decode steps) each copy takes its expert's weights.
//!   With a ragged dot (`GroupedMatmul::RaggedDot`: TPU, or MaxText's `megablox=false`) the copies are
//!   sorted per shard of the batch instead and multiplied in place by XLA's ragged dot, each device taking
//!   only its own tokens (MaxText's `shard_map` around its grouped matmul): no padding, no weight gathers,
//!   and no global sort, which on a pod would gather every token to every chip.

use super::norm::silu;
use crate::config::GroupedMatmul;
use crate::ir::{BinaryOp, DType, GatherDims, RaggedSpec, ReduceKind, ScatterDims, ScatterMode, Sharding, Tensor};

/// How the routed expert weights are sharded when they are used whole — by the ragged dot (the
/// partitioner gathers them before each layer's manual computation) and by the dense path: the mesh axes
/// the rules give `embed_moe` (fsdp) cut the expert dim instead, when the experts are not split already
/// (expert parallelism) and those axes divide them. The bytes per device and the gathers are the same
/// either way; what changes is the layout on TPU. libtpu's dots want their output dim minor-most, which
/// for `wo` (and for the `wi` in the input gradient) is `embed`, and libtpu lays the bf16 copy of the
/// stack it hoists out of the layer scan the same way: a 2048/64 = 32-wide `embed` shard minor-most in
/// 128-wide tiles is stored 4 times over. Cut on the experts, the 80B train step on v5p-128 at 4096
/// tokens needs 34.88 instead of 40.73 GiB a chip dropless (MaxText's megablox: 38.95), 40.46 instead of
/// 46.43 dense. Orbax files hold whole arrays: checkpoints are the same either way.
pub const EXPERT_SHARD_MOVE: (&str, &str) = ("embed_moe", "exp");

/// The expert MLP weights: wi_0, wi_1 [exp, embed, mlp_moe], wo [exp, mlp_moe, embed].
pub struct ExpertWeights<'a> {
    pub wi_0: &'a Tensor,
    pub wi_1: &'a Tensor,
    pub wo: &'a Tensor,
    /// MaxText's `activations_in_float32`.
    pub activations_in_float32: bool,
}

impl ExpertWeights<'_> {
    /// SwiGLU over the last axis `embed` of `x` with weights already selected per leading axis:
    /// `w0`, `w1` [.., embed, mlp_moe] and `wo` [.., mlp_moe, embed] sharing `x`'s batch axis names.
    /// The three matmul outputs carry MaxText's remat names; its grouped-matmul (`dropless`) path names
    /// the second input projection `moe_mlpwi_1` only, so `minimal` does not keep it there.
    fn mlp(&self, x: &Tensor, w0: &Tensor, w1: &Tensor, wo: &Tensor, dropless: bool) -> Tensor {
        let act = |t: Tensor| if self.activations_in_float32 { t.convert(DType::F32) } else { t };
        let h0 = act(x.dot(w0, &["embed"])).checkpoint_name("mlpwi_0").checkpoint_name("moe_mlpwi_0");
        let h1 = act(x.dot(w1, &["embed"]));
        let h1 = if dropless { h1 } else { h1.checkpoint_name("mlpwi_1") }.checkpoint_name("moe_mlpwi_1");
        let h = (&silu(&h0) * &h1).convert(x.dtype());
        h.dot(wo, &["mlp_moe"]).checkpoint_name("mlpwo").checkpoint_name("moe_mlpwo")
    }

    /// SwiGLU over sorted copies `rows` [P, N, embed] with `sizes` [P, exp] copies per expert, by ragged
    /// dots split over `shards` (names as [`ExpertWeights::mlp`]'s dropless ones). Each weight's gradient
    /// is reduced into the weight's own sharding (as declared in `moe.rs`: [`EXPERT_SHARD_MOVE`]).
    fn ragged_mlp(&self, rows: &Tensor, sizes: &Tensor, shards: &[String], native: bool) -> Tensor {
        let act = |t: Tensor| if self.activations_in_float32 { t.convert(DType::F32) } else { t };
        let w = |t: &Tensor| if t.dtype() == rows.dtype() { t.clone() } else { t.convert(rows.dtype()) };
        let ctx = rows.graph().sharding_context();
        let spec = |t: &Tensor, logical: [&str; 3]| RaggedSpec {
            shard_axes: shards.to_vec(),
            native,
            weight_sharding: ctx.as_ref().map(|c| c.resolve_moved(&logical, t.dims(), EXPERT_SHARD_MOVE)),
        };
        let (s_in, s_out) = (spec(self.wi_0, ["exp", "embed_moe", "mlp_moe"]), spec(self.wo, ["exp", "mlp_moe", "embed_moe"]));
        let h0 = act(rows.ragged_dot(&w(self.wi_0), sizes, &s_in)).checkpoint_name("mlpwi_0").checkpoint_name("moe_mlpwi_0");
        let h1 = act(rows.ragged_dot(&w(self.wi_1), sizes, &s_in)).checkpoint_name("moe_mlpwi_1");
        let h = (&silu(&h0) * &h1).convert(rows.dtype());
        h.ragged_dot(&w(self.wo), sizes, &s_out).checkpoint_name("mlpwo").checkpoint_name("moe_mlpwo")
    }
}

/// MaxText's expert capacity per batch row (`generate_masks`):
/// `int(max(ceil(tokens·k / experts) · capacity_factor, capacity_factor))`.
pub fn expert_capacity(seq: i64, top_k: i64, num_experts: i64, capacity_factor: f64) -> i64 {
    let per = ((seq * top_k) as f64 / num_experts as f64).ceil();
    ((per * capacity_factor).max(capacity_factor) as i64).max(1)
}

/// Token dropping's bookkeeping for top-k expert ids `idx` [batch, seq, k] (s32): each copy's 1-based
/// position in its expert's queue of the batch row, counted in priority order (token position, then rank
/// in the top-k), and whether it is kept (position ≤ `capacity`). Returns (position [batch, seq, k] s32,
/// kept [batch, seq, k] pred).
pub fn capacity_positions(idx: &Tensor, num_experts: i64, capacity: i64) -> (Tensor, Tensor) {
    let g = idx.graph();
    let (b, s, k) = (idx.dims()[0], idx.dims()[1], idx.dims()[2]);
    let experts = g.iota(DType::S32, &[b, s, k, num_experts], 3);
    let onehot = idx.broadcast_in_dim(&[b, s, k, num_experts], &[0, 1, 2]).eq_(&experts);
    let ones = onehot.select(&g.full(1.0, DType::S32, &[b, s, k, num_experts]), &g.zeros(DType::S32, &[b, s, k, num_experts]));
    let count = ones.reshape(&[b, s * k, num_experts]).cumsum(1).reshape(&[b, s, k, num_experts]);
    // Each copy's count at its own expert.
    let position = (&count * &ones).sum(&[3]);
    let kept = position.le(&g.full(capacity as f64, DType::S32, &[b, s, k]));
    (position, kept)
}

/// Token dropping: x [batch, seq, embed], top-k ids `idx` and combine weights `w` [batch, seq, k].
/// Returns the routed output [batch, seq, embed] and how many copies were dropped (f32 scalar).
pub fn dropping(x: &Tensor, idx: &Tensor, w: &Tensor, ew: &ExpertWeights, capacity_factor: f64) -> (Tensor, Tensor) {
    let g = x.graph();
    let (b, s, k) = (idx.dims()[0], idx.dims()[1], idx.dims()[2]);
    let e = ew.wi_0.dims()[0];
    let cap = expert_capacity(s, k, e, capacity_factor);
    let (position, kept) = capacity_positions(idx, e, cap);
    // slot[b,s,k,e,c] = copy (b,s,k) goes to expert e at queue slot c (0-based); summed over k (a token
    // sends at most one copy to an expert).
    let shape = [b, s, k, e, cap];
    let to_expert = idx.broadcast_in_dim(&shape, &[0, 1, 2]).eq_(&g.iota(DType::S32, &shape, 3));
    let at_slot = position.add_scalar(-1.0).broadcast_in_dim(&shape, &[0, 1, 2]).eq_(&g.iota(DType::S32, &shape, 4));
    let kept_b = kept.broadcast_in_dim(&shape, &[0, 1, 2]);
    let hit = to_expert.binary(BinaryOp::And, &at_slot).binary(BinaryOp::And, &kept_b);
    let zeros = g.zeros(x.dtype(), &shape);
    let dispatch = hit.select(&g.full(1.0, x.dtype(), &shape), &zeros).sum(&[2]).named(&["batch", "seq", "exp", "cap"]);
    let wk = w.convert(x.dtype()).broadcast_in_dim(&shape, &[0, 1, 2]);
    let combine = hit.select(&wk, &zeros).sum(&[2]).named(&["batch", "seq", "exp", "cap"]);
    let dispatch = dispatch.constrain(&["activation_batch_moe", "activation_length_moe", "activation_exp", ""]);
    // "BSM,BSEC->EBCM", the expert MLP per (expert, row, slot), then "EBCM,BSEC->BSM".
    let expert_in = x.dot(&dispatch, &["seq"]); // [batch, embed, exp, cap]
    let y = ew.mlp(&expert_in, ew.wi_0, ew.wi_1, ew.wo, false); // [exp, batch, cap, embed]
    let out = y.dot(&combine, &["exp", "cap"]).transpose_to(&["batch", "seq", "embed"]);
    let dropped = kept.select(&g.zeros(DType::F32, &[b, s, k]), &g.full(1.0, DType::F32, &[b, s, k])).sum(&[0, 1, 2]);
    (out, dropped)
}

/// Rows per block of the dropless grouped matmul for `copies` token copies over `experts`: the largest
/// power of two ≤ copies / experts (so the padding, at most experts × (block − 1) rows, stays below the
/// copies), at most 128.
pub fn dropless_block(copies: i64, experts: i64) -> i64 {
    let per = (copies / experts).max(1);
    (1i64 << (63 - per.leading_zeros())).min(128)
}

/// Dropless for few copies (fewer than two per expert: decode steps, short prompts): each copy takes its
/// expert's weights directly, so a step reads the weights of the `tokens·k` chosen experts once each,
/// where one-row blocks would read `tokens·k + experts` expert weights (36 instead of 4 for one token
/// of a 32-expert top-4 model, 522 instead of 10 on the 80B). Same sums as the blocked path.
fn per_copy(x: &Tensor, idx: &Tensor, w: &Tensor, ew: &ExpertWeights) -> Tensor {
    let (b, s, k, m) = (idx.dims()[0], idx.dims()[1], idx.dims()[2], x.dims()[2]);
    let n = b * s * k;
    let copies = ["activation_exp", "", ""];
    let expert = idx.reshape(&[n]);
    let token = x.reshape(&[b * s, m]).broadcast_in_dim(&[b * s, k, m], &[0, 2]).reshape(&[n, 1, m]).named(&["blk", "row", "embed"]).constrain(&copies);
    let pick = |wt: &Tensor, axes: [&'static str; 3]| wt.take_rows(&expert).named(&axes).constrain(&copies);
    let w0 = pick(ew.wi_0, ["blk", "embed", "mlp_moe"]);
    let w1 = pick(ew.wi_1, ["blk", "embed", "mlp_moe"]);
    let wo = pick(ew.wo, ["blk", "mlp_moe", "embed"]);
    let y = ew.mlp(&token, &w0, &w1, &wo, true).constrain(&copies); // [copy, 1, embed]
    let per_copy = y.reshape(&[b, s, k, m]).named(&["batch", "seq", "k", "embed"]);
    let wk = w.convert(per_copy.dtype()).named(&["batch", "seq", "k"]);
    per_copy.zip_named(&wk, |y, w| y * w).sum_over(&["k"])
}

/// `self[indices[i]] = updates[i]` on dim 0 of a rank-1 `self`, replacing.
fn scatter_1d(into: &Tensor, indices: &Tensor, updates: &Tensor, mode: ScatterMode) -> Tensor {
    let n = indices.dims()[0];
    let dims = ScatterDims { inserted_window_dims: vec![0], scatter_dims_to_operand_dims: vec![0], index_vector_dim: 1, ..Default::default() };
    into.scatter(&indices.reshape(&[n, 1]), updates, dims, mode)
}

/// Dropless: x [batch, seq, embed], top-k ids `idx` and combine weights `w` [batch, seq, k] ->
/// [batch, seq, embed].
pub fn dropless(x: &Tensor, idx: &Tensor, w: &Tensor, ew: &ExpertWeights, kernel: GroupedMatmul) -> Tensor {
    let g = x.graph();
    let (b, s, k, m) = (idx.dims()[0], idx.dims()[1], idx.dims()[2], x.dims()[2]);
    let e = ew.wi_0.dims()[0];
    let (t, n) = (b * s, b * s * k);
    let block = dropless_block(n, e);
    if block == 1 {
        return per_copy(x, idx, w, ew);
    }
    if let GroupedMatmul::RaggedDot { native } = kernel {
        if let Some(shards) = token_shards(x, e) {
            return ragged(x, idx, w, ew, &shards, native);
        }
    }
    let blocks = (n + block - 1) / block + e;
    let padded = blocks * block;
    let i32s = |v: f64, dims: &[i64]| g.full(v, DType::S32, dims);

    // Copies (token-major, then top-k rank) sorted by expert, stably.
    let expert_of_copy = idx.reshape(&[n]);
    let sorted = g.sort(&[expert_of_copy.clone(), g.iota(DType::S32, &[n], 0)], 0, false, true);
    let (sorted_expert, copy_of_sorted) = (&sorted[0], &sorted[1]);
    // Group sizes, their starts, and the starts of the groups padded to whole blocks.
    let sizes = scatter_1d(&i32s(0.0, &[e]), &expert_of_copy, &i32s(1.0, &[n]), ScatterMode::Add);
    let padded_sizes = (&(&sizes.add_scalar((block - 1) as f64) / &i32s(block as f64, &[e])) * &i32s(block as f64, &[e])).with_axes(&[None]);
    let starts = sizes.cumulative(ReduceKind::Sum, 0, false, true);
    let padded_starts = padded_sizes.cumulative(ReduceKind::Sum, 0, false, true);
    // Where each sorted copy goes in the padded order, and where each copy (original order) went.
    let rank = &g.iota(DType::S32, &[n], 0) - &starts.take_rows(sorted_expert);
    let dest_sorted = &padded_starts.take_rows(sorted_expert) + &rank;
    let dest = scatter_1d(&i32s(0.0, &[n]), copy_of_sorted, &dest_sorted, ScatterMode::Replace);
    // The token in each padded row (`t`, a zero row, for padding).
    let token_of_sorted = copy_of_sorted / &i32s(k as f64, &[n]);
    let token_of_row = scatter_1d(&i32s(t as f64, &[padded]), &dest_sorted, &token_of_sorted, ScatterMode::Replace);
    let x_ext = g.concatenate(&[x.reshape(&[t, m]), g.zeros(x.dtype(), &[1, m])], 0);
    // Blocks are split over the expert axes (`activation_exp`), so each device computes its share of
    // the blocks; the partitioner brings each block its expert's weights.
    let blocks_logical = ["activation_exp", "", ""];
    let rows = x_ext.take_rows(&token_of_row).reshape(&[blocks, block, m]).named(&["blk", "row", "embed"]).constrain(&blocks_logical);
    // Each block's expert: how many padded groups end at or before the block's first row (blocks past
    // the last group take the last expert; their rows are zero and unused).
    let ends = &padded_starts + &padded_sizes;
    let block_first = g.iota(DType::S32, &[blocks, e], 0).mul_scalar(block as f64);
    let ended = ends.broadcast_in_dim(&[blocks, e], &[1]).le(&block_first);
    let owner = ended.select(&i32s(1.0, &[blocks, e]), &i32s(0.0, &[blocks, e])).sum(&[1]).min(&i32s((e - 1) as f64, &[blocks]));
    let pick = |wt: &Tensor, axes: [&'static str; 3]| wt.take_rows(&owner).named(&axes).constrain(&blocks_logical);
    let w0 = pick(ew.wi_0, ["blk", "embed", "mlp_moe"]);
    let w1 = pick(ew.wi_1, ["blk", "embed", "mlp_moe"]);
    let wo = pick(ew.wo, ["blk", "mlp_moe", "embed"]);
    let y = ew.mlp(&rows, &w0, &w1, &wo, true).constrain(&blocks_logical).reshape(&[padded, m]); // [blk, row, embed] -> rows
    // Back to the copies, weighted and summed over each token's k.
    let per_copy = y.take_rows(&dest).reshape(&[b, s, k, m]).named(&["batch", "seq", "k", "embed"]);
    let wk = w.convert(per_copy.dtype()).named(&["batch", "seq", "k"]);
    per_copy.zip_named(&wk, |y, w| y * w).sum_over(&["k"])
}

/// The mesh axes the batch is split over for the ragged path, or `None` when the experts are split
/// (expert parallelism: each device then holds only some experts' weights, which the blocked path
/// handles). No mesh: no axes.
fn token_shards(x: &Tensor, experts: i64) -> Option<Vec<String>> {
    let Some(ctx) = x.graph().sharding_context() else { return Some(Vec::new()) };
    if !ctx.resolve(&["activation_exp"], &[experts]).dims[0].is_empty() {
        return None;
    }
    let batch = ctx.resolve(&["activation_batch_moe", "activation_length_moe", "activation_embed"], x.dims());
    Some(batch.dims[0].clone())
}

/// `x[p, idx[p, i]]` for x [P, T, M] and idx [P, N] (s32) -> [P, N, M]: batched over P, so each shard
/// gathers from its own rows only.
fn take_per_shard(x: &Tensor, idx: &Tensor) -> Tensor {
    let (p, n, m) = (x.dims()[0], idx.dims()[1], x.dims()[2]);
    let dims = GatherDims {
        offset_dims: vec![2],
        collapsed_slice_dims: vec![1],
        operand_batching_dims: vec![0],
        start_indices_batching_dims: vec![0],
        start_index_map: vec![1],
        index_vector_dim: 2,
        slice_sizes: vec![1, 1, m],
    };
    x.gather(&idx.reshape(&[p, n, 1]), dims)
}

/// Dropless by ragged dots: the tokens cut into one group of rows per shard of the batch (`shards`), each
/// group's copies sorted by expert, multiplied, and put back.
fn ragged(x: &Tensor, idx: &Tensor, w: &Tensor, ew: &ExpertWeights, shards: &[String], native: bool) -> Tensor {
    let g = x.graph();
    let (b, s, k, m) = (idx.dims()[0], idx.dims()[1], idx.dims()[2], x.dims()[2]);
    let e = ew.wi_0.dims()[0];
    let p: i64 = g.sharding_context().map_or(1, |c| shards.iter().filter_map(|a| c.mesh.axis_size(a)).product());
    let (t, n) = (b * s / p, b * s * k / p);
    let split = |t: Tensor| -> Tensor {
        let mut sharding = Sharding::replicated(t.rank());
        sharding.dims[0] = shards.to_vec();
        if shards.is_empty() { t } else { t.with_sharding(sharding) }
    };
    let i32s = |v: f64, dims: &[i64]| g.full(v, DType::S32, dims);
    // Each shard's copies (token-major, then top-k rank) sorted by expert, stably.
    let expert = split(idx.reshape(&[p, n]));
    let sorted = g.sort(&[expert.clone(), g.iota(DType::S32, &[p, n], 1)], 1, false, true);
    let copy_of_sorted = &sorted[1];
    // Copies per expert and shard: a scatter-add batched over the shards.
    let count = ScatterDims {
        update_window_dims: vec![],
        inserted_window_dims: vec![1],
        input_batching_dims: vec![0],
        scatter_indices_batching_dims: vec![0],
        scatter_dims_to_operand_dims: vec![1],
        index_vector_dim: 2,
    };
    let sizes = i32s(0.0, &[p, e]).scatter(&expert.reshape(&[p, n, 1]), &i32s(1.0, &[p, n]), count, ScatterMode::Add);
    let rows = take_per_shard(&split(x.reshape(&[p, t, m])), &(copy_of_sorted / &i32s(k as f64, &[p, n])));
    let y = ew.ragged_mlp(&rows, &sizes, shards, native); // [P, N, embed], sorted order
    // Where each copy went in its shard's sorted order: the inverse permutation.
    let dest = g.sort(&[copy_of_sorted.clone(), g.iota(DType::S32, &[p, n], 1)], 1, false, true).pop().unwrap();
    let per_copy = take_per_shard(&y, &dest).reshape(&[b, s, k, m]).named(&["batch", "seq", "k", "embed"]);
    let wk = w.convert(per_copy.dtype()).named(&["batch", "seq", "k"]);
    per_copy.zip_named(&wk, |y, w| y * w).sum_over(&["k"])
}
