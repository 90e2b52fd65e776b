//! Sparse MoE block of Qwen3-Next (reference §2.6): router, top-k, softmax over the k, SwiGLU experts,
//! shared expert with a sigmoid gate. The routed experts run by the config's strategy
//! ([`MoeStrategy`]): densely over all experts (the combine weights are zero for unselected experts), with
//! token dropping, or dropless over sorted copies (`moe_dispatch.rs`).

use super::moe_dispatch::{dropless, dropping, ExpertWeights, EXPERT_SHARD_MOVE};
use super::norm::silu;
use super::params::{Init, ParamBuilder};
use crate::config::{GroupedMatmul, ModelConfig, MoeStrategy};
use crate::ir::{DType, Tensor};

/// The router statistics a layer returns, in order (f32 [2]).
pub const AUX: [&str; 3] = ["load_balance_loss", "dropped_copies", "max_expert_load"];

pub struct SparseMoe {
    router: Tensor,
    wi_0: Tensor,
    wi_1: Tensor,
    wo: Tensor,
    shared_wi_0: Tensor,
    shared_wi_1: Tensor,
    shared_wo: Tensor,
    shared_gate: Tensor,
    top_k: i64,
    norm_topk_prob: bool,
    activations_in_float32: bool,
    /// `float32_gate_logits`: the router product in f32.
    gate_logits_in_f32: bool,
    strategy: MoeStrategy,
}

impl SparseMoe {
    pub fn new(cfg: &ModelConfig, pb: &mut ParamBuilder) -> SparseMoe {
        let (e, x, i, s) = (cfg.emb_dim as i64, cfg.num_experts as i64, cfg.moe_mlp_dim as i64, cfg.shared_expert_mlp_dim as i64);
        let std_e = 1.0 / (e as f64).sqrt();
        pb.scope("mlp", |pb| {
            let (router, wi_0, wi_1, wo) = pb.scope("routed_experts", |pb| {
                let router = pb.scope("gate", |pb| pb.param("kernel", &[e, x], &["embed", "exp"], &[Some("embed"), None], Init::Normal { stddev: std_e }));
                // The ragged dot and the dense path take these weights whole: their shards move off `embed`
                // (EXPERT_SHARD_MOVE).
                let whole = matches!(pb.moe_strategy, MoeStrategy::Dense | MoeStrategy::Dropless { kernel: GroupedMatmul::RaggedDot { .. } });
                let w = |pb: &mut ParamBuilder, name: &str, dims: &[i64], axes: &[&'static str], logical: &[Option<&'static str>], std: f64| {
                    let init = Init::Normal { stddev: std };
                    if whole { pb.param_moved(name, dims, axes, logical, init, EXPERT_SHARD_MOVE) } else { pb.param(name, dims, axes, logical, init) }
                };
                let w_in = [Some("exp"), Some("embed_moe"), Some("mlp_moe")];
                let wi_0 = w(pb, "wi_0", &[x, e, i], &["exp", "embed", "mlp_moe"], &w_in, std_e);
                let wi_1 = w(pb, "wi_1", &[x, e, i], &["exp", "embed", "mlp_moe"], &w_in, std_e);
                let w_out = [Some("exp"), Some("mlp_moe"), Some("embed_moe")];
                let wo = w(pb, "wo", &[x, i, e], &["exp", "mlp_moe", "embed"], &w_out, 1.0 / (i as f64).sqrt());
                (router, wi_0, wi_1, wo)
            });
            let (shared_wi_0, shared_wi_1, shared_wo) = pb.scope("shared_expert", |pb| {
                let k = |pb: &mut ParamBuilder, name: &str, dims: &[i64], axes: &[&'static str], logical: &[Option<&'static str>], std: f64| {
                    pb.scope(name, |pb| pb.param("kernel", dims, axes, logical, Init::Normal { stddev: std }))
                };
                let a = k(pb, "wi_0", &[e, s], &["embed", "mlp"], &[Some("embed"), Some("mlp")], std_e);
                let b = k(pb, "wi_1", &[e, s], &["embed", "mlp"], &[Some("embed"), Some("mlp")], std_e);
                let o = k(pb, "wo", &[s, e], &["mlp", "embed"], &[Some("mlp"), Some("embed")], 1.0 / (s as f64).sqrt());
                (a, b, o)
            });
            // MaxText creates this DenseGeneral without weight_dtype: it is always stored as f32.
            let shared_gate = pb.scope("shared_expert_gate", |pb| {
                pb.param_stored_as("kernel", &[e, 1], &["embed", "one"], &[Some("embed"), None], Init::Normal { stddev: std_e }, DType::F32)
            });
            SparseMoe {
                router,
                wi_0,
                wi_1,
                wo,
                shared_wi_0,
                shared_wi_1,
                shared_wo,
                shared_gate,
                top_k: cfg.num_experts_per_tok as i64,
                norm_topk_prob: cfg.norm_topk_prob,
                activations_in_float32: pb.activations_in_float32,
                gate_logits_in_f32: pb.precision.gate_logits,
                strategy: pb.moe_strategy,
            }
        })
    }

    /// The router's choices: top-k of the raw logits. With `norm_topk_prob` the weights are the softmax
    /// over the k (f32) — equal to HF's renormalised top-k probabilities; without it they are the top-k
    /// entries of the softmax over all experts (HF's semantics; MaxText has no such path). Returns the
    /// combine weights [batch, seq, k] (dtype of `x`), expert ids [batch, seq, k] (s32, best first) and the
    /// router logits [batch, seq, exp].
    pub fn route_top_k(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let dtype = x.dtype();
        // [batch, seq, exp]; `float32_gate_logits` moves the product to f32.
        let logits = if self.gate_logits_in_f32 {
            x.convert(DType::F32).dot(&self.router.convert(DType::F32), &["embed"])
        } else {
            x.dot(&self.router, &["embed"])
        };
        let (vals, idx) = logits.top_k(self.top_k);
        let vals = vals.convert(DType::F32).rename("exp", "k");
        let w = if self.norm_topk_prob {
            let m = vals.max_over(&["k"]);
            let e = vals.zip_named(&m, |v, m| (v - m).exp());
            e.zip_named(&e.sum_over(&["k"]), |a, b| a / b)
        } else {
            let all = logits.convert(DType::F32);
            let m = all.max_over(&["exp"]);
            let z = all.zip_named(&m, |v, m| (v - m).exp()).sum_over(&["exp"]);
            vals.zip_named(&m, |v, m| (v - m).exp()).zip_named(&z, |e, z| e / z)
        }
        .convert(dtype);
        (w, idx.rename("exp", "k"), logits)
    }

    /// The k weights scattered onto the expert axis (onehot(idx) · w summed over k) [batch, seq, exp], and
    /// how many of each token's k choices went to each expert ([batch, seq, exp], f32 0/1).
    fn onto_experts(w: &Tensor, idx: &Tensor, num_experts: i64) -> (Tensor, Tensor) {
        let (g, dtype) = (w.graph(), w.dtype());
        let mut ty = idx.ty().clone();
        ty.dims.push(num_experts);
        ty.axes.push(Some("exp"));
        let experts = g.iota(DType::S32, &ty.dims, ty.rank() - 1).with_axes(&ty.axes);
        let onehot = idx.zip_named(&experts, |i, e| i.eq_(e));
        let wk = w.broadcast_like(&ty.with_dtype(dtype));
        let combine = onehot.select(&wk, &wk.full_like(0.0)).sum_over(&["k"]);
        let ones = wk.convert(DType::F32).full_like(1.0);
        let counts = onehot.select(&ones, &ones.full_like(0.0)).sum_over(&["k"]);
        (combine, counts)
    }

    /// MaxText's load-balancing loss of one layer (moe.py `load_balance_loss`), before its weight:
    /// `mean_{b,e}(density · prob) · E²` with `density[b,e] = mean_t Σ_k 1[idx = e]` and
    /// `prob[b,e] = mean_t softmax(logits)[e]`.
    pub fn load_balance_loss(logits: &Tensor, counts: &Tensor) -> Tensor {
        let l = logits.convert(DType::F32);
        let m = l.max_over(&["exp"]);
        let e = l.zip_named(&m, |v, m| (v - m).exp());
        let p = e.zip_named(&e.sum_over(&["exp"]), |a, b| a / b);
        let t = l.dim("seq") as f64;
        let density = counts.sum_over(&["seq"]).mul_scalar(1.0 / t);
        let prob = p.sum_over(&["seq"]).mul_scalar(1.0 / t);
        let n = l.dim("exp") as f64;
        let cells = (l.dim("batch") as f64) * n;
        (&density * &prob).sum_over(&["batch", "exp"]).mul_scalar(n * n / cells)
    }

    /// m [batch, seq, embed] (post-attention norm output) -> [batch, seq, embed].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with_aux(x).0
    }

    /// As [`forward`](Self::forward), with this layer's router statistics [`AUX`] (f32 [3]): the
    /// load-balancing loss (unweighted), how many token copies were dropped over capacity, and the busiest
    /// expert's copies over a balanced share.
    pub fn forward_with_aux(&self, x: &Tensor) -> (Tensor, Tensor) {
        let graph = x.graph();
        let router = graph.scope("router");
        let (w, idx, logits) = self.route_top_k(x);
        let (combine, counts) = Self::onto_experts(&w, &idx, logits.dim("exp"));
        let lb = Self::load_balance_loss(&logits, &counts);
        drop(router);
        let routed_scope = graph.scope("routed");
        let act = |t: Tensor| if self.activations_in_float32 { t.convert(DType::F32) } else { t };
        let ew = ExpertWeights { wi_0: &self.wi_0, wi_1: &self.wi_1, wo: &self.wo, activations_in_float32: self.activations_in_float32 };
        let none_dropped = || x.graph().zeros(DType::F32, &[]);
        let (routed, dropped) = match self.strategy {
            MoeStrategy::Dense => (self.dense(x, &combine), none_dropped()),
            MoeStrategy::Dropping { capacity_factor } => dropping(x, &idx, &w, &ew, capacity_factor),
            MoeStrategy::Dropless { kernel } => (dropless(x, &idx, &w, &ew, kernel), none_dropped()),
        };
        // The busiest expert's share of the copies against a balanced share (1 = balanced).
        let balanced = counts.sum_over(&["batch", "seq", "exp"]).mul_scalar(1.0 / logits.dim("exp") as f64);
        let max_load = &counts.sum_over(&["batch", "seq"]).max_over(&["exp"]) / &balanced;
        let aux = x.graph().concatenate(&[lb.reshape(&[1]), dropped.reshape(&[1]), max_load.reshape(&[1])], 0);
        drop(routed_scope);
        let _shared = graph.scope("shared");
        // The shared expert is MaxText's MlpBlock, with its remat names.
        let s0 = act(x.dot(&self.shared_wi_0, &["embed"]).checkpoint_name("mlpwi_0"));
        let s1 = act(x.dot(&self.shared_wi_1, &["embed"]).checkpoint_name("mlpwi_1"));
        let shared = (&silu(&s0) * &s1).convert(x.dtype()).dot(&self.shared_wo, &["mlp"]).checkpoint_name("mlpwo");
        let gate = x.dot(&self.shared_gate, &["embed"]).sigmoid(); // [batch, seq, one]
        let gate = gate.reshape(&gate.dims()[..2]).named(&["batch", "seq"]);
        (&routed + &shared.zip_named(&gate, |s, g| s * g), aux)
    }

    /// Every expert on every token, weighted by `combine` [batch, seq, exp] (zero for unselected experts).
    fn dense(&self, x: &Tensor, combine: &Tensor) -> Tensor {
        let act = |t: Tensor| if self.activations_in_float32 { t.convert(DType::F32) } else { t };
        let hidden = ["activation_batch_moe", "activation_length_moe", "activation_exp", "activation_mlp_moe"];
        let name = |t: Tensor, a: &'static str, b: &'static str| t.checkpoint_name(a).checkpoint_name(b);
        let h0 = name(act(x.dot(&self.wi_0, &["embed"]).constrain(&hidden)), "mlpwi_0", "moe_mlpwi_0"); // [batch, seq, exp, mlp_moe]
        let h1 = name(act(x.dot(&self.wi_1, &["embed"]).constrain(&hidden)), "mlpwi_1", "moe_mlpwi_1");
        let h = (&silu(&h0) * &h1).convert(x.dtype());
        let hw = h.zip_named(combine, |a, b| a * b);
        // The combine is folded into the output projection, so `mlpwo` names the combined output (MaxText
        // names the per-expert outputs before combining them).
        name(hw.dot(&self.wo, &["exp", "mlp_moe"]), "mlpwo", "moe_mlpwo") // [batch, seq, embed]
    }
}
