//! Training FLOPs, tokens and MFU, counted the way MaxText counts them
//! (`maxtext_utils.calculate_tflops_training_per_device`, MaxText e591f30).
//!
//! Per token of a sequence of length `S`, forward pass (`E` = emb_dim, `V` = vocab_size, `L` layers of which
//! `L_full = L / inhomogeneous_layer_cycle_interval` are full attention and `L_gdn = L - L_full` Gated DeltaNet
//! for Qwen3-Next; every layer is full attention for the other decoder blocks):
//!
//! | term | FLOPs per token (forward) | MaxText function |
//! |---|---|---|
//! | MoE FFN, per layer | `2·E·N_exp` (router) `+ (shared_experts + k)·2·E·F·(n_act + 1)` | `calculate_routed_and_shared_ffn_tflops_per_device` |
//! | dense FFN, per layer (`num_experts <= 1`) | `2·E·mlp_dim·(n_act + 1)` | `calculate_ffn_mamtul_tflops_per_device` |
//! | unembedding (lm head) | `2·E·V` (the embedding lookup is a gather: not counted) | `embedding_flops` |
//! | full attention q/k/v + out, per full layer | `2·E·(Hq + 2·Hkv)·Dh + 2·E·Hq·Dh` | `qkv_flops`, `projection_flops` |
//! | GDN projections + conv, per GDN layer | `2·E·(2·K + 2·Vd + 2·Hv) + 2·E·Vd + 2·Kconv·(2·K + Vd)` | `calculate_gated_delta_net_flops_per_device` |
//! | causal attention core, per full layer | `4·S·Hq·Dh / 2` (QKᵀ and PV, halved for the causal mask) | `causal_attention_flops` |
//! | GDN core, per GDN layer | `8·Hv·Dk·Dv` (4 rank-`Dk·Dv` ops of the recurrent update × 2 for FMA) | same, `flops_core` |
//! | MTP module (if `mtp_num_layers > 0`) | last layer's FFN + q/k/v/out, and its causal core | MTP block |
//!
//! with `F` = the expert intermediate size, `n_act` = `len(mlp_activations)` (2 for SwiGLU), `K = Hk·Dk`,
//! `Vd = Hv·Dv` the GDN key / value widths. Training = 3 × forward (forward + 2 for backward) for both the
//! weight and the attention terms; per device and step it is multiplied by the tokens one device processes
//! (`global_batch · S / num_devices`, gradient-accumulation micro-batches included in `global_batch`).
//!
//! What MaxText's count leaves out, and so does this one: the output-gate half of Qwen3-Next's `q_proj`
//! (`E·Hq·Dh` more weights per full layer), the shared-expert gate (`E·1`), norms, RoPE, softmax and the
//! elementwise work. The GDN core is MaxText's recurrent-view `8·Hv·Dk·Dv`; MaxText's unit test
//! (`flop_calculation_test.py::test_qwen3_next_flops`) checks it, within 5%, against a chunked-form count
//! `2·Hv·C·(2Dk+Dv) + Hv·C² + 2·Hv·C·(Dk+Dv) + 6·Hv·Dk·Dv` (chunk `C`) that [`gdn_chunked_core_flops_per_token`]
//! provides for comparison.

use crate::config::{Config, Hardware, ModelConfig};

/// Forward FLOPs of one token, term by term (multiply [`FlopsPerToken::training`] for fwd + bwd).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlopsPerToken {
    /// Router, shared and routed experts (or the dense MLP), all layers.
    pub ffn: f64,
    /// The unembedding matmul `2·E·V`.
    pub embedding: f64,
    /// q/k/v and output projections of the full-attention layers.
    pub attention_projections: f64,
    /// in_proj_qkvz, in_proj_ba, out_proj and the depthwise conv of the GDN layers.
    pub gdn_projections: f64,
    /// Causal QKᵀ and PV of the full-attention layers (depends on the sequence length).
    pub attention_core: f64,
    /// The GDN delta-rule core.
    pub gdn_core: f64,
    /// Weight FLOPs of the multi-token-prediction modules.
    pub mtp_weights: f64,
    /// Attention core of the multi-token-prediction modules.
    pub mtp_attention: f64,
}

impl FlopsPerToken {
    /// Forward FLOPs on learnable weights (MaxText's `learnable_weight_tflops` before the ×3).
    pub fn learnable_weight(&self) -> f64 {
        self.ffn + self.embedding + self.attention_projections + self.gdn_projections + self.mtp_weights
    }

    /// Forward FLOPs of the attention cores (MaxText's `attention_tflops` before the ×3).
    pub fn attention(&self) -> f64 {
        self.attention_core + self.gdn_core + self.mtp_attention
    }

    /// Forward FLOPs per token.
    pub fn forward(&self) -> f64 {
        self.learnable_weight() + self.attention()
    }

    /// Training FLOPs per token: 3 × forward (one forward, two backward matmuls per forward matmul).
    pub fn training(&self) -> f64 {
        3.0 * self.forward()
    }

    /// The parameters that one token multiplies by, as MaxText counts them: `learnable_weight / 2`.
    pub fn active_params(&self) -> f64 {
        self.learnable_weight() / 2.0
    }
}

/// Forward FLOPs of one matmul-FFN of intermediate size `mlp_dim` for one token.
fn ffn_flops(m: &ModelConfig, mlp_dim: usize) -> f64 {
    let (e, f, n_act) = (m.emb_dim as f64, mlp_dim as f64, m.mlp_activations.len() as f64);
    2.0 * e * f * n_act + 2.0 * e * f
}

/// One decoder layer's FFN: router + shared + routed experts, or the dense MLP.
fn layer_ffn_flops(m: &ModelConfig) -> f64 {
    if m.is_moe() {
        let gate = 2.0 * m.emb_dim as f64 * m.num_experts as f64;
        let shared = ffn_flops(m, m.shared_expert_mlp_dim) * m.shared_experts as f64;
        let routed = ffn_flops(m, m.moe_mlp_dim) * m.num_experts_per_tok as f64;
        gate + shared + routed
    } else {
        ffn_flops(m, m.mlp_dim)
    }
}

/// q/k/v + output projection of one full-attention layer, one token.
fn attention_projection_flops(m: &ModelConfig) -> f64 {
    let (e, hq, hkv, dh) = (m.emb_dim as f64, m.num_query_heads as f64, m.num_kv_heads as f64, m.head_dim as f64);
    2.0 * e * (hq + 2.0 * hkv) * dh + 2.0 * e * hq * dh
}

/// Causal attention core of one full-attention layer, one token of a length-`seq_len` sequence.
fn causal_attention_flops(m: &ModelConfig, seq_len: usize) -> f64 {
    4.0 * seq_len as f64 * m.num_query_heads as f64 * m.head_dim as f64 / 2.0
}

/// GDN projections and conv of one layer, one token.
fn gdn_projection_flops(m: &ModelConfig) -> f64 {
    let g = &m.gdn;
    let (e, k, v, hv) = (m.emb_dim as f64, g.key_dim() as f64, g.value_dim() as f64, g.num_value_heads as f64);
    let qkvz_ba = 2.0 * e * (2.0 * k + 2.0 * v + 2.0 * hv);
    let out = 2.0 * e * v;
    let conv = 2.0 * g.conv_kernel_dim as f64 * (2.0 * k + v);
    qkvz_ba + out + conv
}

/// MaxText's GDN core of one layer, one token: `8·Hv·Dk·Dv`.
fn gdn_core_flops(m: &ModelConfig) -> f64 {
    let g = &m.gdn;
    8.0 * g.num_value_heads as f64 * g.key_head_dim as f64 * g.value_head_dim as f64
}

/// The chunked-form GDN core count of MaxText's unit test, one layer and one token (for comparison only):
/// `2·Hv·C·(2Dk+Dv) + Hv·C² + 2·Hv·C·(Dk+Dv) + 6·Hv·Dk·Dv` with `C = gdn_chunk_size`.
pub fn gdn_chunked_core_flops_per_token(m: &ModelConfig) -> f64 {
    let g = &m.gdn;
    let (hv, dk, dv, c) =
        (g.num_value_heads as f64, g.key_head_dim as f64, g.value_head_dim as f64, g.chunk_size as f64);
    let intra = 2.0 * hv * c * (2.0 * dk + dv) + hv * c * c;
    let inter = 2.0 * hv * c * (dk + dv) + 6.0 * hv * dk * dv;
    intra + inter
}

/// Forward FLOPs of one token of a length-`seq_len` training sequence, term by term (module docs).
pub fn flops_per_token(m: &ModelConfig, seq_len: usize) -> FlopsPerToken {
    let layers = m.num_decoder_layers as f64;
    let (full, gdn) = if m.is_hybrid_linear_attention() {
        // MaxText: num_decoder_layers // inhomogeneous_layer_cycle_interval full-attention layers.
        let full = m.num_decoder_layers / m.inhomogeneous_layer_cycle_interval;
        (full as f64, (m.num_decoder_layers - full) as f64)
    } else {
        (layers, 0.0)
    };
    let mtp = m.mtp_num_layers as f64;
    FlopsPerToken {
        ffn: layer_ffn_flops(m) * layers,
        embedding: 2.0 * m.emb_dim as f64 * m.vocab_size as f64,
        attention_projections: attention_projection_flops(m) * full,
        gdn_projections: if gdn > 0.0 { gdn_projection_flops(m) * gdn } else { 0.0 },
        attention_core: causal_attention_flops(m, seq_len) * full,
        gdn_core: if gdn > 0.0 { gdn_core_flops(m) * gdn } else { 0.0 },
        // MaxText: an MTP module is a replica of the last (full-attention, MoE) layer without the lm head.
        mtp_weights: (layer_ffn_flops(m) + attention_projection_flops(m)) * mtp,
        mtp_attention: causal_attention_flops(m, seq_len) * mtp,
    }
}

/// Tokens one device processes per training step: `global_batch · seq_len / num_devices`
/// (MaxText's `calculate_tokens_training_per_device`, `global_batch` = `global_batch_size_to_train_on`).
pub fn tokens_per_device(global_batch: usize, seq_len: usize, num_devices: usize) -> f64 {
    global_batch as f64 * seq_len as f64 / num_devices.max(1) as f64
}

/// Training TFLOPs (10¹²) one device performs per step: [`FlopsPerToken::training`] × [`tokens_per_device`].
///
/// `global_batch` is MaxText's `global_batch_size_to_train_on` (`cfg.batch`, gradient-accumulation
/// micro-batches included), `seq_len` is `max_target_length`.
pub fn training_tflops_per_device(cfg: &Config, global_batch: usize, seq_len: usize, num_devices: usize) -> f64 {
    flops_per_token(&cfg.model, seq_len).training() * tokens_per_device(global_batch, seq_len, num_devices) / 1e12
}

/// Model FLOPs utilisation: achieved TFLOP/s per device over the device's peak.
pub fn mfu(tflops_per_sec_per_device: f64, peak_tflops_per_device: f64) -> f64 {
    if peak_tflops_per_device > 0.0 {
        tflops_per_sec_per_device / peak_tflops_per_device
    } else {
        f64::NAN
    }
}

/// Nominal peak of one XLA CPU device, TFLOP/s. Not a measurement: a round figure (a many-core AVX-512
/// socket is within a small factor of it) so that MFU on CPU is a readable number, not a utilisation.
pub const CPU_NOMINAL_PEAK_TFLOPS: f64 = 1.0;

/// Dense bf16 peak TFLOP/s per device (a JAX/PJRT device: a TPU chip, a GPU), by device-kind substring
/// (lower case), first match wins. Vendor datasheet figures without sparsity.
pub const PEAK_BF16_TFLOPS: &[(&str, f64)] = &[
    ("v5 lite", 197.0), // TPU v5e ("TPU v5 lite")
    ("v5e", 197.0),
    ("v5litepod", 197.0),
    ("v6 lite", 918.0), // TPU v6e / Trillium ("TPU v6 lite")
    ("v6e", 918.0),
    ("v5p", 459.0), // TPU v5p
    ("v5", 459.0),
    ("v4", 275.0),    // TPU v4
    ("tpu7", 2307.0), // TPU7x / Ironwood
    ("v7", 2307.0),
    ("b200", 2250.0), // NVIDIA B200
    ("h200", 989.0),  // NVIDIA H200 / GH200: the H100 SXM tensor core
    ("h100", 989.0),  // NVIDIA H100 SXM
    ("a100", 312.0),  // NVIDIA A100
    ("cpu", CPU_NOMINAL_PEAK_TFLOPS),
];

/// The peak of a device kind (PJRT's device description such as `TPU v5p`, `NVIDIA H100 80GB HBM3`, or a
/// `compile_topology` name such as `v5p-128`), from [`PEAK_BF16_TFLOPS`].
pub fn peak_tflops_for_device_kind(kind: &str) -> Option<f64> {
    let k = kind.to_ascii_lowercase();
    PEAK_BF16_TFLOPS.iter().find(|(pat, _)| k.contains(pat)).map(|&(_, v)| v)
}

/// The default per-device peak for a run: the device kind if known (from the runtime), else the
/// `compile_topology` name, else by `hardware`: cpu = [`CPU_NOMINAL_PEAK_TFLOPS`], gpu = H100 (989),
/// tpu = v5p (459). `configs/base.yml` has no key for it; a caller that knows better passes its own figure
/// to [`crate::metrics::MetricsOptions`].
pub fn peak_tflops_per_device(cfg: &Config, device_kind: Option<&str>) -> f64 {
    device_kind
        .and_then(peak_tflops_for_device_kind)
        .or_else(|| cfg.run.compile_topology.as_deref().and_then(peak_tflops_for_device_kind))
        .unwrap_or(match cfg.run.hardware {
            Hardware::Cpu => CPU_NOMINAL_PEAK_TFLOPS,
            Hardware::Gpu => 989.0,
            Hardware::Tpu => 459.0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_kinds() {
        assert_eq!(peak_tflops_for_device_kind("TPU v5 lite"), Some(197.0));
        assert_eq!(peak_tflops_for_device_kind("TPU v5p"), Some(459.0));
        assert_eq!(peak_tflops_for_device_kind("v5p-128"), Some(459.0));
        assert_eq!(peak_tflops_for_device_kind("TPU v4"), Some(275.0));
        assert_eq!(peak_tflops_for_device_kind("TPU v6 lite"), Some(918.0));
        assert_eq!(peak_tflops_for_device_kind("NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(peak_tflops_for_device_kind("NVIDIA H200"), Some(989.0));
        assert_eq!(peak_tflops_for_device_kind("cpu"), Some(CPU_NOMINAL_PEAK_TFLOPS));
        assert_eq!(peak_tflops_for_device_kind("mystery"), None);
    }

    #[test]
    fn mfu_is_a_ratio() {
        assert_eq!(mfu(459.0 / 2.0, 459.0), 0.5);
        assert!(mfu(1.0, 0.0).is_nan());
    }
}
