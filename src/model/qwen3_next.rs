//! Qwen3-Next: embedding, 48 pre-norm decoder layers (3 Gated DeltaNet then 1 gated full attention,
//! repeated; every layer with a sparse MoE), final norm, lm head (reference §2.1–2.2).
//!
//! One decoder stack serves every program: the stateless forward (training, logit checks), prefill and
//! decode steps, where the decode state ([`DecodeState`]) is an extra carry. With `scan_layers=true` the
//! layers run as MaxText 0.2.5 scans them: a `while` over blocks of `inhomogeneous_layer_cycle_interval`
//! layers, whose GDN layers (`local_layers`) run in an inner `while` and whose last layer is the
//! full-attention `global_layer`; parameters are stacked on axis 1. Trace and compile time therefore do not
//! grow with depth.
//!
//! Activations are constrained where MaxText calls `nn.with_logical_constraint`: the embedding output and
//! the residual stream of every layer (`activation_batch, activation_norm_length, activation_embed`) and the
//! logits (`activation_embed_and_logits_batch, activation_length, activation_vocab`); the layers constrain
//! their own heads.

use super::state::{put, take, DecodeState, Pass};
use crate::config::ModelConfig;
use crate::ir::{index_const, DType, Graph, Tensor};
use crate::nn::moe::AUX;
use crate::nn::{GatedAttention, GatedDeltaNet, Init, ParamBuilder, RmsNormOffset, SparseMoe};

/// The residual stream's logical axes.
pub const RESIDUAL: [&str; 3] = ["activation_batch", "activation_norm_length", "activation_embed"];

pub(crate) enum Mixer {
    Linear(GatedDeltaNet),
    Full(GatedAttention),
}

/// One pre-norm decoder layer: `h = x + mixer(norm(x)); y = h + moe(norm(h))`.
pub struct DecoderLayer {
    pub(crate) input_norm: RmsNormOffset,
    pub(crate) mixer: Mixer,
    pub(crate) post_norm: RmsNormOffset,
    pub(crate) moe: SparseMoe,
}

/// Per-token inputs of a forward pass, all [batch, seq].
pub struct ForwardInputs {
    pub tokens: Tensor,
    pub positions: Tensor,
    /// Segment ids (0 = padding) for packed or padded batches; `None` = one segment per row.
    pub segment_ids: Option<Tensor>,
}

/// What one layer gives back: the new residual stream, its MoE router statistics ([`AUX`]) and, in prefill and
/// decode, its new state pair ((k, v) cache or (conv, recurrent) state).
pub struct LayerOutput {
    pub x: Tensor,
    pub aux: Tensor,
    pub state: Option<(Tensor, Tensor)>,
}

impl DecoderLayer {
    pub fn new(cfg: &ModelConfig, pb: &mut ParamBuilder, full_attention: bool) -> DecoderLayer {
        let (e, eps) = (cfg.emb_dim as i64, cfg.normalization_layer_epsilon);
        let input_norm = RmsNormOffset::new(pb, "input_layernorm", e, "embed", eps);
        let mixer = if full_attention {
            Mixer::Full(pb.scope("attention", |pb| GatedAttention::new(cfg, pb)))
        } else {
            Mixer::Linear(GatedDeltaNet::new(cfg, pb))
        };
        let post_norm = RmsNormOffset::new(pb, "post_attention_layernorm", e, "embed", eps);
        let moe = SparseMoe::new(cfg, pb);
        DecoderLayer { input_norm, mixer, post_norm, moe }
    }

    /// x [batch, seq, embed] -> [batch, seq, embed] (stateless pass).
    pub fn forward(&self, x: &Tensor, inputs: &ForwardInputs) -> Tensor {
        self.forward_pass(x, inputs, Pass::Forward, None).x
    }

    /// The layer in any pass: `state` is this layer's state pair in prefill and decode, `None` in a
    /// stateless forward.
    pub fn forward_pass(&self, x: &Tensor, inputs: &ForwardInputs, pass: Pass, state: Option<(&Tensor, &Tensor)>) -> LayerOutput {
        let graph = x.graph();
        let scope = graph.scope(match self.mixer { Mixer::Full(_) => "attention", Mixer::Linear(_) => "gdn" });
        let a = self.input_norm.forward(x);
        let seg = inputs.segment_ids.as_ref();
        let pos = &inputs.positions;
        let (a, state) = match (&self.mixer, pass, state) {
            (Mixer::Full(attn), Pass::Forward, None) => (attn.forward(&a, pos, seg), None),
            (Mixer::Linear(gdn), Pass::Forward, None) => (gdn.forward(&a, seg), None),
            (Mixer::Full(attn), Pass::Prefill { segment_ids, .. }, Some((k, v))) => {
                let (o, k, v) = attn.prefill(&a, pos, segment_ids, k, v);
                (o, Some((k, v)))
            }
            (Mixer::Full(attn), Pass::Decode, Some((k, v))) => {
                let (o, k, v) = attn.decode_step(&a, pos, k, v);
                (o, Some((k, v)))
            }
            (Mixer::Linear(gdn), Pass::Prefill { segment_ids, lengths }, Some(_)) => {
                let (o, conv, rec) = gdn.prefill(&a, segment_ids, lengths);
                (o, Some((conv, rec)))
            }
            (Mixer::Linear(gdn), Pass::Decode, Some((conv, rec))) => {
                let (o, conv, rec) = gdn.decode_step(&a, conv, rec);
                (o, Some((conv, rec)))
            }
            (_, Pass::Forward, Some(_)) => panic!("a stateless forward pass was given decode state"),
            (_, _, None) => panic!("prefill and decode passes need the layer's state"),
        };
        let h = (x + &a).constrain(&RESIDUAL);
        drop(scope);
        let _moe = graph.scope("moe");
        let (m, aux) = self.moe.forward_with_aux(&self.post_norm.forward(&h));
        LayerOutput { x: (&h + &m).constrain(&RESIDUAL), aux, state }
    }
}

/// Layer `l`'s state pair from slot `slot` of the stacked state (KV for full attention, else conv/rec).
fn layer_state(st: &DecodeState, full: bool, slot: &Tensor) -> (Tensor, Tensor) {
    if full {
        (take(&st.kv_k, slot), take(&st.kv_v, slot))
    } else {
        (take(&st.conv, slot), take(&st.rec, slot))
    }
}

/// `st` with layer state `new` written to slot `slot`.
fn store(st: &mut DecodeState, full: bool, slot: &Tensor, new: (Tensor, Tensor)) {
    if full {
        st.kv_k = put(&st.kv_k, slot, &new.0);
        st.kv_v = put(&st.kv_v, slot, &new.1);
    } else {
        st.conv = put(&st.conv, slot, &new.0);
        st.rec = put(&st.rec, slot, &new.1);
    }
}

/// Runs `layer` with its state (when there is one) at `slot`, accumulating into `x`, `aux`, `st`.
fn run_layer(layer: &DecoderLayer, inputs: &ForwardInputs, pass: Pass, full: bool, slot: &Tensor, x: &Tensor, aux: &Tensor, st: &mut Option<DecodeState>) -> (Tensor, Tensor) {
    let pair = st.as_ref().map(|s| layer_state(s, full, slot));
    let out = layer.forward_pass(x, inputs, pass, pair.as_ref().map(|(a, b)| (a, b)));
    if let (Some(s), Some(new)) = (st.as_mut(), out.state) {
        store(s, full, slot, new);
    }
    (out.x.with_axes(&x.ty().axes), aux + &out.aux)
}

/// The decoder stack under `decoder/`: scanned blocks or unscanned `layers_{l}`. Returns the output, the sum
/// over layers of the MoE router statistics ([`AUX`]), and the new decode state (when one was given).
/// `remat_regions` (stateless passes only): each unscanned layer runs as a one-iteration counted loop, the
/// region in which the autodiff recomputes what the remat policy does not keep (scanned blocks are such
/// regions already).
#[allow(clippy::too_many_arguments)]
fn decoder_layers(cfg: &ModelConfig, pb: &mut ParamBuilder, x: Tensor, inputs: &ForwardInputs, pass: Pass, state: Option<DecodeState>, scan: bool, remat_regions: bool) -> (Tensor, Tensor, Option<DecodeState>) {
    let interval = cfg.inhomogeneous_layer_cycle_interval;
    let layers = cfg.num_decoder_layers;
    let g = x.graph();
    let aux = g.zeros(DType::F32, &[AUX.len() as i64]);
    if !scan {
        let (mut x, mut aux, mut st) = (x, aux, state);
        let (mut full_slot, mut lin_slot) = (0, 0);
        for l in 0..layers {
            let full = cfg.is_full_attention(l);
            let layer = pb.scope(&format!("layers_{l}"), |pb| DecoderLayer::new(cfg, pb, full));
            let slot = if full { &mut full_slot } else { &mut lin_slot };
            let idx = index_const(&g, *slot);
            *slot += 1;
            if remat_regions {
                assert!(st.is_none(), "remat regions are for stateless passes");
                let out = g.remat_loop(0, 1, &[x, aux], |_, _, c| {
                    let (x, aux) = run_layer(&layer, inputs, pass, full, &idx, &c[0], &c[1], &mut None);
                    vec![x, aux]
                });
                (x, aux) = (out[0].clone(), out[1].clone());
            } else {
                (x, aux) = run_layer(&layer, inputs, pass, full, &idx, &x, &aux, &mut st);
            }
        }
        return (x, aux, st);
    }
    assert!(interval >= 1 && layers % interval == 0, "scan_layers needs num_decoder_layers ({layers}) divisible by {interval}");
    let blocks = (layers / interval) as i64;
    let locals = (interval - 1) as i64;
    // Loop carries: x, aux, then the four state arrays when there is a state.
    let pack = |x: Tensor, aux: Tensor, st: Option<DecodeState>| {
        let mut c = vec![x, aux];
        c.extend(st.map(DecodeState::into_vec).unwrap_or_default());
        c
    };
    let unpack = |c: &[Tensor]| (c[0].clone(), c[1].clone(), (c.len() > 2).then(|| DecodeState::from_vec(c[2..6].to_vec())));
    // Prefill and decode trace the scan unrolled (constant layer indices into the same stacked
    // parameters and state): their per-layer state updates then happen in place, where XLA:CPU's nested
    // loops carrying the caches cost a mid-size decode step 2.5x its unscanned time.
    let unroll = state.is_some();
    let counted = |g: &Graph, n: i64, init: Vec<Tensor>, body: &mut dyn FnMut(&Graph, &Tensor, &[Tensor]) -> Vec<Tensor>| {
        if unroll {
            (0..n).fold(init, |c, i| body(g, &index_const(g, i), &c))
        } else {
            g.remat_loop(0, n, &init, |bg, i, c| body(bg, i, c))
        }
    };
    let out = pb.scope("layers", |pb| {
        counted(&g, blocks, pack(x, aux, state), &mut |bg, block, carry| {
            let (mut x, mut aux, mut st) = unpack(carry);
            if locals > 0 {
                let r = pb.scope("local_layers", |pb| {
                    counted(bg, locals, pack(x.clone(), aux.clone(), st.clone()), &mut |lg, local, c| {
                        let (x, aux, mut st) = unpack(c);
                        let layer = pb.stacked("layers", blocks, block, |pb| pb.stacked("local_layers", locals, local, |pb| DecoderLayer::new(cfg, pb, false)));
                        let slot = &(block * &index_const(lg, locals)) + local;
                        let (x, aux) = run_layer(&layer, inputs, pass, false, &slot, &x, &aux, &mut st);
                        pack(x, aux, st)
                    })
                });
                (x, aux, st) = unpack(&r);
            }
            let layer = pb.scope("global_layer", |pb| pb.stacked("layers", blocks, block, |pb| DecoderLayer::new(cfg, pb, true)));
            let (x, aux) = run_layer(&layer, inputs, pass, true, block, &x, &aux, &mut st);
            pack(x, aux, st)
        })
    });
    unpack(&out)
}

/// `token_embedder/embedding`: tokens [batch, seq] -> [batch, seq, embed].
pub(crate) fn token_embed(cfg: &ModelConfig, pb: &mut ParamBuilder, tokens: &Tensor) -> Tensor {
    let (e, v) = (cfg.emb_dim as i64, cfg.vocab_size as i64);
    let embedding = pb.scope("token_embedder", |pb| {
        pb.param("embedding", &[v, e], &["vocab", "embed"], &[Some("vocab"), Some("embed_vocab")], Init::Normal { stddev: 1.0 })
    });
    embedding.take_rows(tokens).named(&["batch", "seq", "embed"]).constrain(&RESIDUAL)
}

/// `decoder/decoder_norm` + `decoder/logits_dense`: [batch, seq, embed] -> logits [batch, seq, vocab] (f32).
pub(crate) fn lm_head(cfg: &ModelConfig, pb: &mut ParamBuilder, x: &Tensor) -> Tensor {
    let (e, v) = (cfg.emb_dim as i64, cfg.vocab_size as i64);
    let norm = RmsNormOffset::new(pb, "decoder_norm", e, "embed", cfg.normalization_layer_epsilon);
    let kernel = pb.scope("logits_dense", |pb| {
        pb.param("kernel", &[e, v], &["embed", "vocab"], &[Some("embed_vocab"), Some("vocab")], Init::Normal { stddev: 1.0 / (e as f64).sqrt() })
    });
    let h = norm.forward(x);
    // `logits_dot_in_fp32`: the projection itself runs in f32 (else in `dtype`, the result cast to f32).
    let logits = if pb.precision.logits_dot {
        h.convert(DType::F32).dot(&kernel.convert(DType::F32), &["embed"])
    } else {
        h.dot(&kernel, &["embed"]).convert(DType::F32)
    };
    logits.constrain(&["activation_embed_and_logits_batch", "activation_length", "activation_vocab"])
}

/// tokens -> logits [batch, seq, vocab] (f32). Declares every parameter on `pb`.
pub fn forward(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, scan: bool) -> Tensor {
    forward_with_aux(cfg, pb, inputs, scan).0
}

/// As [`forward`], with the MoE router statistics ([`AUX`], f32 [3]) averaged over layers: the
/// load-balancing loss (MaxText's `moe_lb_loss` before its weight), the token copies dropped per layer and
/// the busiest expert's load against a balanced one.
pub fn forward_with_aux(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, scan: bool) -> (Tensor, Tensor) {
    let (logits, aux, _) = run(cfg, pb, inputs, Pass::Forward, None, scan, false);
    (logits, aux)
}

/// As [`forward_with_aux`], traced to be differentiated: every layer (unscanned) or block of layers
/// (scanned) is a remat region, as MaxText wraps each in `nn.remat`.
pub fn forward_for_grad(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, scan: bool) -> (Tensor, Tensor) {
    let (logits, aux, _) = run(cfg, pb, inputs, Pass::Forward, None, scan, true);
    (logits, aux)
}

/// tokens [batch, seq] at `positions` -> (logits [batch, seq, vocab] f32, new state): prefill or decode.
pub fn forward_with_state(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, pass: Pass, state: DecodeState, scan: bool) -> (Tensor, DecodeState) {
    let (logits, _, st) = run(cfg, pb, inputs, pass, Some(state.constrained()), scan, false);
    (logits, st.expect("state in, state out").constrained())
}

#[allow(clippy::too_many_arguments)]
fn run(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, pass: Pass, state: Option<DecodeState>, scan: bool, remat_regions: bool) -> (Tensor, Tensor, Option<DecodeState>) {
    let x = token_embed(cfg, pb, &inputs.tokens);
    pb.scope("decoder", |pb| {
        let (x, aux_sum, st) = decoder_layers(cfg, pb, x, inputs, pass, state, scan, remat_regions);
        (lm_head(cfg, pb, &x), aux_sum.mul_scalar(1.0 / cfg.num_decoder_layers as f64), st)
    })
}
