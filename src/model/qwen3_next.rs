//! Qwen3-Next: embedding, 48 pre-norm decoder layers (3 Gated DeltaNet then 1 gated full attention,
//! repeated; every layer with a sparse MoE), final norm, lm head (reference §2.1–2.2).
//!
//! With `scan_layers=true` the layers run as MaxText 0.2.5 scans them: a `while` over blocks of
//! `inhomogeneous_layer_cycle_interval` layers, whose GDN layers (`local_layers`) run in an inner `while`
//! and whose last layer is the full-attention `global_layer`; parameters are stacked on axis 1. Trace and
//! compile time therefore do not grow with depth.

use crate::config::ModelConfig;
use crate::ir::{DType, Tensor};
use crate::nn::{GatedAttention, GatedDeltaNet, Init, ParamBuilder, RmsNormOffset, SparseMoe};

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

    /// x [batch, seq, embed] -> [batch, seq, embed].
    pub fn forward(&self, x: &Tensor, inputs: &ForwardInputs) -> Tensor {
        self.forward_with_aux(x, inputs).0
    }

    /// As [`forward`](Self::forward), with the layer's MoE load-balancing loss.
    pub fn forward_with_aux(&self, x: &Tensor, inputs: &ForwardInputs) -> (Tensor, Tensor) {
        let a = self.input_norm.forward(x);
        let seg = inputs.segment_ids.as_ref();
        let a = match &self.mixer {
            Mixer::Linear(gdn) => gdn.forward(&a, seg),
            Mixer::Full(attn) => attn.forward(&a, &inputs.positions, seg),
        };
        self.finish_with_aux(&(x + &a))
    }

    /// The MoE half of the layer: `h + moe(norm(h))`.
    pub(crate) fn finish(&self, h: &Tensor) -> Tensor {
        self.finish_with_aux(h).0
    }

    /// As [`finish`](Self::finish), with the MoE load-balancing loss.
    fn finish_with_aux(&self, h: &Tensor) -> (Tensor, Tensor) {
        let (m, lb) = self.moe.forward_with_aux(&self.post_norm.forward(h));
        (h + &m, lb)
    }
}

/// The decoder stack under `decoder/`: scanned blocks or unscanned `layers_{l}`. Returns the output and
/// the sum over layers of the MoE load-balancing losses.
fn decoder_layers(cfg: &ModelConfig, pb: &mut ParamBuilder, x: Tensor, inputs: &ForwardInputs, scan: bool) -> (Tensor, Tensor) {
    let interval = cfg.inhomogeneous_layer_cycle_interval;
    let layers = cfg.num_decoder_layers;
    let g = x.graph();
    let zero = g.scalar(0.0, DType::F32);
    if !scan {
        let (mut x, mut lb) = (x, zero);
        for l in 0..layers {
            let full = cfg.is_full_attention(l);
            let layer = pb.scope(&format!("layers_{l}"), |pb| DecoderLayer::new(cfg, pb, full));
            let (nx, l_lb) = layer.forward_with_aux(&x, inputs);
            (x, lb) = (nx, &lb + &l_lb);
        }
        return (x, lb);
    }
    assert!(interval >= 1 && layers % interval == 0, "scan_layers needs num_decoder_layers ({layers}) divisible by {interval}");
    let blocks = (layers / interval) as i64;
    let locals = (interval - 1) as i64;
    let out = pb.scope("layers", |pb| {
        g.fori_loop(0, blocks, &[x, zero], |_, block, carry| {
            let (mut x, mut lb) = (carry[0].clone(), carry[1].clone());
            if locals > 0 {
                let r = pb.scope("local_layers", |pb| {
                    x.graph().fori_loop(0, locals, &[x.clone(), lb.clone()], |_, local, c| {
                        let layer = pb.stacked("layers", blocks, block, |pb| {
                            pb.stacked("local_layers", locals, local, |pb| DecoderLayer::new(cfg, pb, false))
                        });
                        let (nx, l_lb) = layer.forward_with_aux(&c[0], inputs);
                        vec![nx, &c[1] + &l_lb]
                    })
                });
                (x, lb) = (r[0].clone(), r[1].clone());
            }
            let layer = pb.scope("global_layer", |pb| pb.stacked("layers", blocks, block, |pb| DecoderLayer::new(cfg, pb, true)));
            let (nx, l_lb) = layer.forward_with_aux(&x, inputs);
            vec![nx, &lb + &l_lb]
        })
    });
    (out[0].clone(), out[1].clone())
}

/// `token_embedder/embedding`: tokens [batch, seq] -> [batch, seq, embed].
pub(crate) fn token_embed(cfg: &ModelConfig, pb: &mut ParamBuilder, tokens: &Tensor) -> Tensor {
    let (e, v) = (cfg.emb_dim as i64, cfg.vocab_size as i64);
    let embedding = pb.scope("token_embedder", |pb| {
        pb.param("embedding", &[v, e], &["vocab", "embed"], &[Some("vocab"), Some("embed_vocab")], Init::Normal { stddev: 1.0 })
    });
    embedding.take_rows(tokens).named(&["batch", "seq", "embed"])
}

/// `decoder/decoder_norm` + `decoder/logits_dense`: [batch, seq, embed] -> logits [batch, seq, vocab] (f32).
pub(crate) fn lm_head(cfg: &ModelConfig, pb: &mut ParamBuilder, x: &Tensor) -> Tensor {
    let (e, v) = (cfg.emb_dim as i64, cfg.vocab_size as i64);
    let norm = RmsNormOffset::new(pb, "decoder_norm", e, "embed", cfg.normalization_layer_epsilon);
    let kernel = pb.scope("logits_dense", |pb| {
        pb.param("kernel", &[e, v], &["embed", "vocab"], &[Some("embed_vocab"), Some("vocab")], Init::Normal { stddev: 1.0 / (e as f64).sqrt() })
    });
    norm.forward(x).dot(&kernel, &["embed"]).convert(DType::F32)
}

/// tokens -> logits [batch, seq, vocab] (f32). Declares every parameter on `pb`.
pub fn forward(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, scan: bool) -> Tensor {
    forward_with_aux(cfg, pb, inputs, scan).0
}

/// As [`forward`], with the MoE load-balancing loss averaged over layers (MaxText's `moe_lb_loss` before
/// its weight; f32 scalar).
pub fn forward_with_aux(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, scan: bool) -> (Tensor, Tensor) {
    let x = token_embed(cfg, pb, &inputs.tokens);
    pb.scope("decoder", |pb| {
        let (x, lb_sum) = decoder_layers(cfg, pb, x, inputs, scan);
        (lm_head(cfg, pb, &x), lb_sum.mul_scalar(1.0 / cfg.num_decoder_layers as f64))
    })
}
