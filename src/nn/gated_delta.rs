//! Gated DeltaNet, Qwen3-Next's linear attention (reference §2.4): fused projections in the per-key-head
//! grouped layout, causal depthwise conv + SiLU, L2-normed q/k, gates, the gated delta rule, gated
//! RMSNorm and the output projection.

use super::delta_rule::{chunked_delta_rule, recurrent_step};
use super::norm::{l2norm, silu, softplus, RmsNormGated};
use super::params::{Init, ParamBuilder};
use crate::config::ModelConfig;
use crate::ir::{DType, Tensor};

pub struct GatedDeltaNet {
    w_qkvz: Tensor,
    w_ba: Tensor,
    conv: Tensor,
    a_log: Tensor,
    dt_bias: Tensor,
    norm: RmsNormGated,
    w_out: Tensor,
    k_heads: i64,
    v_heads: i64,
    dk: i64,
    dv: i64,
    kernel: i64,
    chunk: i64,
}

/// The projections of a chunk of tokens before the conv.
struct Projected {
    /// [batch, seq, conv]: q, k, v flattened and concatenated (the conv input).
    qkv: Tensor,
    /// [batch, seq, v_heads, dv]
    z: Tensor,
    /// [batch, seq, v_heads]
    b: Tensor,
    a: Tensor,
}

impl GatedDeltaNet {
    pub fn new(cfg: &ModelConfig, pb: &mut ParamBuilder) -> GatedDeltaNet {
        let gdn = &cfg.gdn;
        let e = cfg.emb_dim as i64;
        let (hk, hv, dk, dv) = (gdn.num_key_heads as i64, gdn.num_value_heads as i64, gdn.key_head_dim as i64, gdn.value_head_dim as i64);
        let kc = gdn.conv_kernel_dim as i64;
        let conv_dim = gdn.conv_dim() as i64;
        let std = 1.0 / (e as f64).sqrt();
        let logical = [Some("embed"), Some("gdn_head")];
        let dense = |pb: &mut ParamBuilder, name: &str, dims: &[i64], axes: &[&'static str], logical: &[Option<&'static str>], std: f64| {
            pb.scope(name, |pb| pb.param("kernel", dims, axes, logical, Init::Normal { stddev: std }))
        };
        pb.scope("attention", |pb| {
            let w_qkvz = dense(pb, "in_proj_qkvz", &[e, 2 * hk * dk + 2 * hv * dv], &["embed", "qkvz"], &logical, std);
            let w_ba = dense(pb, "in_proj_ba", &[e, 2 * hv], &["embed", "ba"], &logical, std);
            let conv_std = 1.0 / (kc as f64).sqrt();
            let conv = dense(pb, "conv1d", &[kc, 1, conv_dim], &["kc", "one", "conv"], &[None, None, None], conv_std);
            let a_log = pb.param("A_log", &[hv], &["v_heads"], &[None], Init::LogUniform { lo: 1.0, hi: 16.0 });
            let dt_bias = pb.param("dt_bias", &[hv], &["v_heads"], &[None], Init::Ones);
            let norm = RmsNormGated::new(pb, dv, "dv", cfg.normalization_layer_epsilon);
            let out_std = 1.0 / ((hv * dv) as f64).sqrt();
            let w_out = dense(pb, "out_proj", &[hv * dv, e], &["value", "embed"], &[Some("gdn_head"), Some("embed")], out_std);
            GatedDeltaNet { w_qkvz, w_ba, conv, a_log, dt_bias, norm, w_out, k_heads: hk, v_heads: hv, dk, dv, kernel: kc, chunk: gdn.chunk_size as i64 }
        })
    }

    /// x [batch, seq, embed] -> the grouped projections, re-laid-out by head (HF's
    /// `fix_query_key_value_ordering`): key head g holds [q_g | k_g | v_g (r heads) | z_g (r heads)].
    fn project(&self, x: &Tensor) -> Projected {
        let (hk, dk, dv) = (self.k_heads, self.dk, self.dv);
        let r = self.v_heads / hk;
        let p = x.dot(&self.w_qkvz, &["embed"]).split_axis("qkvz", &[("k_heads", hk), ("grp", 2 * dk + 2 * r * dv)]);
        let part = |start: i64, len: i64| p.slice_dim(p.axis("grp"), start, len);
        let q = part(0, dk).merge_axes(&["k_heads", "grp"], "qk");
        let k = part(dk, dk).merge_axes(&["k_heads", "grp"], "qk");
        let v = part(2 * dk, r * dv).merge_axes(&["k_heads", "grp"], "vz");
        let z = part(2 * dk + r * dv, r * dv).split_axis("grp", &[("rep", r), ("dv", dv)]).merge_axes(&["k_heads", "rep"], "v_heads");
        let g = x.graph();
        let qkv = g.concatenate(&[q.rename("qk", "conv"), k.rename("qk", "conv"), v.rename("vz", "conv")], 2);
        let ba = x.dot(&self.w_ba, &["embed"]).split_axis("ba", &[("k_heads", hk), ("grp", 2 * r)]);
        let half = |start: i64| ba.slice_dim(ba.axis("grp"), start, r).merge_axes(&["k_heads", "grp"], "v_heads");
        Projected { qkv: qkv.named(&["batch", "seq", "conv"]), z, b: half(0), a: half(r) }
    }

    /// Causal depthwise conv over seq: `c[t] = Σ_j W[j] u[t−(K−1)+j]`, with `state` ([batch, K−1, conv], the
    /// inputs before this chunk) or zeros in front. Returns (silu(c) in u's dtype, the new state).
    fn causal_conv(&self, u: &Tensor, state: Option<&Tensor>) -> (Tensor, Tensor) {
        self.conv_impl(u, state, None)
    }

    /// The causal conv of a packed row: a tap reading another segment's input reads zero.
    fn causal_conv_segments(&self, u: &Tensor, segment_ids: Option<&Tensor>) -> (Tensor, Tensor) {
        self.conv_impl(u, None, segment_ids)
    }

    fn conv_impl(&self, u: &Tensor, state: Option<&Tensor>, segment_ids: Option<&Tensor>) -> (Tensor, Tensor) {
        let (kc, t) = (self.kernel, u.dim("seq"));
        let g = u.graph();
        let padded = match state {
            Some(s) => g.concatenate(&[s.named(&["batch", "seq", "conv"]), u.clone()], 1),
            None => {
                let zero = g.scalar(0.0, u.dtype());
                u.pad(&zero, &[0, kc - 1, 0], &[0, 0, 0], &[0, 0, 0]).with_axes(&u.ty().axes)
            }
        };
        let mut acc: Option<Tensor> = None;
        for j in 0..kc {
            let w = self.conv.slice_dim(0, j, 1).reshape(&[self.conv.dims()[2]]).named(&["conv"]);
            let mut term = padded.slice_dim(1, j, t).zip_named(&w, |a, b| a * b);
            if let Some(seg) = segment_ids {
                // Segment of the input this tap reads (−1 before the row starts) against the output's.
                let seg = seg.named(&["batch", "seq"]);
                let minus = g.scalar(-1.0, DType::S32);
                let src = seg.pad(&minus, &[0, kc - 1], &[0, 0], &[0, 0]).slice_dim(1, j, t).named(&["batch", "seq"]);
                let same = src.eq_(&seg);
                term = same.broadcast_like(&term.ty().with_dtype(DType::Pred)).select(&term, &term.full_like(0.0));
            }
            acc = Some(match acc {
                None => term,
                Some(a) => &a + &term,
            });
        }
        let c = silu(&acc.unwrap().convert(DType::F32)).convert(u.dtype());
        let new_state = padded.slice_dim(1, t, kc - 1);
        (c, new_state)
    }

    /// The delta-rule inputs after the conv: q, k (repeated to the value heads, L2-normed, q scaled), v,
    /// g, beta, all with a `heads` axis. `segment_ids` [batch, seq]: segment 0 = padding, whose k, v and g
    /// are zeroed (MaxText), so padding leaves the state untouched.
    fn heads(&self, u: &Tensor, p: &Projected, segment_ids: Option<&Tensor>) -> [Tensor; 5] {
        let (hk, hv, dk, dv) = (self.k_heads, self.v_heads, self.dk, self.dv);
        let part = |start: i64, len: i64| u.slice_dim(2, start, len);
        let q = part(0, hk * dk).split_axis("conv", &[("k_heads", hk), ("dk", dk)]);
        let mut k = part(hk * dk, hk * dk).split_axis("conv", &[("k_heads", hk), ("dk", dk)]);
        let mut v = part(2 * hk * dk, hv * dv).split_axis("conv", &[("v_heads", hv), ("dv", dv)]);
        let beta = p.b.sigmoid();
        // g = −exp(A_log) · softplus(a + dt_bias), per value head.
        let a = p.a.zip_named(&self.dt_bias, |a, b| a + b);
        let mut g = softplus(&a).zip_named(&self.a_log.exp().neg(), |s, m| s * m);
        if let Some(seg) = segment_ids {
            let keep = seg.named(&["batch", "seq"]).ne_(&seg.full_like(0.0));
            let zero_where = |t: &Tensor| {
                let m = keep.broadcast_like(&t.ty().with_dtype(DType::Pred));
                m.select(t, &t.full_like(0.0))
            };
            k = zero_where(&k);
            v = zero_where(&v);
            g = zero_where(&g);
        }
        // Value head h reads key head floor(h / r) (jnp.repeat / torch.repeat_interleave).
        let r = hv / hk;
        let repeat = |t: &Tensor| {
            let mut ty = t.ty().clone();
            ty.dims.insert(3, r);
            ty.axes.insert(3, Some("rep"));
            t.broadcast_like(&ty).merge_axes(&["k_heads", "rep"], "v_heads")
        };
        let eps = 1e-6;
        let q = repeat(&l2norm(&q, "dk", eps)).mul_scalar(1.0 / (dk as f64).sqrt());
        let k = repeat(&l2norm(&k, "dk", eps));
        // MaxText's shard_map around the chunk kernel: batch over activation_kv_batch, heads over
        // activation_kv_heads, the rest whole.
        let constrain = |t: Tensor| {
            let t = t.rename("v_heads", "heads");
            let logical: Vec<&str> = t.ty().axes.iter().map(|a| match *a {
                Some("batch") => "activation_kv_batch",
                Some("heads") => "activation_kv_heads",
                _ => "",
            }).collect();
            t.constrain(&logical)
        };
        [q, k, v, g, beta].map(constrain)
    }

    /// Gated norm of the delta-rule output and the output projection.
    fn output(&self, o: &Tensor, p: &Projected) -> Tensor {
        let o = o.rename("heads", "v_heads");
        let y = self.norm.forward(&o, &p.z).merge_axes(&["v_heads", "dv"], "value");
        y.dot(&self.w_out, &["value"])
    }

    /// Full sequence from an empty state: x [batch, seq, embed] -> [batch, seq, embed]. With
    /// `segment_ids` (packed training; 0 = padding) the conv and the delta-rule state are reset at segment
    /// starts — unlike MaxText, which leaks state across packed documents — so packed training equals
    /// per-document training.
    pub fn forward(&self, x: &Tensor, segment_ids: Option<&Tensor>) -> Tensor {
        let graph = x.graph();
        let p = { let _s = graph.scope("in_proj"); self.project(x) };
        let (u, _) = { let _s = graph.scope("conv"); self.causal_conv_segments(&p.qkv, segment_ids) };
        let [q, k, v, g, beta] = { let _s = graph.scope("heads"); self.heads(&u, &p, segment_ids) };
        let (o, _) = { let _s = graph.scope("delta_rule"); chunked_delta_rule(&q, &k, &v, &g, &beta, None, segment_ids, self.chunk) };
        let _s = graph.scope("out");
        self.output(&o, &p)
    }

    /// Prefill: like `forward`, and also returns the states after the last real token of each row:
    /// the conv state (the last K−1 conv inputs before position `lengths[b]`) [batch, K−1, conv] and the
    /// recurrent state [batch, heads, dk, dv] (f32). Rows are right-padded (segment 0 after `lengths[b]`).
    pub fn prefill(&self, x: &Tensor, segment_ids: &Tensor, lengths: &Tensor) -> (Tensor, Tensor, Tensor) {
        let p = self.project(x);
        let (u, _) = self.causal_conv(&p.qkv, None);
        let [q, k, v, g, beta] = self.heads(&u, &p, Some(segment_ids));
        let (o, rec) = chunked_delta_rule(&q, &k, &v, &g, &beta, None, None, self.chunk);
        // Conv inputs at positions lengths[b]−(K−1) .. lengths[b]−1, i.e. index lengths[b]+j of the input
        // left-padded with K−1 zeros: gathered with a one-hot contraction over seq.
        let (kc, t) = (self.kernel, x.dim("seq"));
        let g_ = x.graph();
        let zero = g_.scalar(0.0, p.qkv.dtype());
        let padded = p.qkv.pad(&zero, &[0, kc - 1, 0], &[0, 0, 0], &[0, 0, 0]).with_axes(&p.qkv.ty().axes);
        let b = x.dim("batch");
        let want = lengths.named(&["batch"]).broadcast_in_dim(&[b, kc - 1], &[0]);
        let want = &want + &g_.iota(DType::S32, &[b, kc - 1], 1);
        let pos = g_.iota(DType::S32, &[b, kc - 1, t + kc - 1], 2).named(&["batch", "kc", "seq"]);
        let onehot = want.named(&["batch", "kc"]).zip_named(&pos, |w, p| p.eq_(w));
        let onehot = onehot.select(&onehot.full_like(1.0).convert(p.qkv.dtype()), &onehot.full_like(0.0).convert(p.qkv.dtype()));
        let conv_state = onehot.dot(&padded, &["seq"]).rename("kc", "seq");
        (self.output(&o, &p), conv_state, rec)
    }

    /// One decode step: x [batch, 1, embed], conv state [batch, K−1, conv], recurrent state [batch, heads,
    /// dk, dv] -> (out [batch, 1, embed], new conv state, new recurrent state). O(1) in the sequence length.
    pub fn decode_step(&self, x: &Tensor, conv_state: &Tensor, rec: &Tensor) -> (Tensor, Tensor, Tensor) {
        let p = self.project(x);
        let (u, conv_state) = self.causal_conv(&p.qkv, Some(conv_state));
        let [q, k, v, g, beta] = self.heads(&u, &p, None);
        let squeeze = |t: &Tensor| {
            let mut dims = t.dims().to_vec();
            let mut axes = t.ty().axes.clone();
            let i = t.axis("seq");
            dims.remove(i);
            axes.remove(i);
            t.reshape(&dims).with_axes(&axes)
        };
        let (o, rec) = recurrent_step(&squeeze(&q), &squeeze(&k), &squeeze(&v), &squeeze(&g), &squeeze(&beta), rec);
        let o = o.split_axis("batch", &[("batch", x.dim("batch")), ("seq", 1)]);
        (self.output(&o, &p), conv_state, rec)
    }
}
