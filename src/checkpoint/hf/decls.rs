//! The Qwen3-Next parameter tree as MaxText stores it (reference §3.2 unscanned, §3.3 scanned in the
//! MaxText 0.2.5 layout), as [`ParamDecl`]s. The model declares its parameters itself (`ParamBuilder`);
//! this list is the reference it is checked against, and lets the import be used and tested on its own.
//! Paths, dims, logical axes, dtypes and scan axes are MaxText's; the trace axis names and initialisers are
//! this file's choice (the model's own declarations are authoritative for those).

use crate::config::ModelConfig;
use crate::ir::{AxisName, DType};
use crate::nn::params::{scan_position, Init, ParamDecl};

/// One parameter of one layer (no scan axes).
struct P {
    name: &'static str,
    dims: Vec<i64>,
    axes: Vec<AxisName>,
    logical: Vec<Option<AxisName>>,
    init: Init,
    /// `None`: `weight_dtype`.
    dtype: Option<DType>,
}

fn p(name: &'static str, dims: &[usize], axes: &[AxisName], logical: &[Option<AxisName>], init: Init) -> P {
    P {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        axes: axes.to_vec(),
        logical: logical.to_vec(),
        init,
        dtype: None,
    }
}

/// `1/sqrt(fan_in)` truncated normal (MaxText's `nd_dense_init(1.0, "fan_in", "truncated_normal")`).
fn fan_in(n: usize) -> Init {
    Init::Normal { stddev: 1.0 / (n as f64).sqrt() }
}

const EMBED: Option<AxisName> = Some("embed");

/// Norm scales: replicated (MaxText's `()`), zero-centred (applied as `1 + w`) unless `ones`.
fn norm(name: &'static str, dim: usize, axis: AxisName, ones: bool) -> P {
    p(name, &[dim], &[axis], &[None], if ones { Init::Ones } else { Init::Zeros })
}

/// Gated DeltaNet (`linear_attn`) parameters of one layer.
fn gdn(cfg: &ModelConfig) -> Vec<P> {
    let (e, g) = (cfg.emb_dim, &cfg.gdn);
    let qkvz = 2 * g.key_dim() + 2 * g.value_dim();
    let gdn_head = Some("gdn_head");
    vec![
        p("attention/in_proj_qkvz/kernel", &[e, qkvz], &["embed", "qkvz"], &[EMBED, gdn_head], fan_in(e)),
        p("attention/in_proj_ba/kernel", &[e, 2 * g.num_value_heads], &["embed", "ba"], &[EMBED, gdn_head], fan_in(e)),
        p(
            "attention/conv1d/kernel",
            &[g.conv_kernel_dim, 1, g.conv_dim()],
            &["conv_window", "conv_in", "conv_dim"],
            &[None, None, None],
            fan_in(g.conv_kernel_dim),
        ),
        p("attention/A_log", &[g.num_value_heads], &["v_heads"], &[None], Init::LogUniform { lo: 1.0, hi: 16.0 }),
        p("attention/dt_bias", &[g.num_value_heads], &["v_heads"], &[None], Init::Ones),
        norm("attention/norm/rms_norm/scale", g.value_head_dim, "v_head_dim", true),
        p(
            "attention/out_proj/kernel",
            &[g.value_dim(), e],
            &["value_dim", "embed"],
            &[gdn_head, EMBED],
            fan_in(g.value_dim()),
        ),
    ]
}

/// Gated full attention (`self_attn`) parameters of one layer. The query projection carries the output
/// gate: `2 * head_dim` per head (query, then gate).
fn full_attention(cfg: &ModelConfig) -> Vec<P> {
    let (e, hq, hkv, dh) = (cfg.emb_dim, cfg.num_query_heads, cfg.num_kv_heads, cfg.head_dim);
    let kv = [EMBED, Some("kv_heads"), Some("kv_head_dim")];
    vec![
        p(
            "attention/attention/query/kernel",
            &[e, hq, 2 * dh],
            &["embed", "q_heads", "q_gate_head_dim"],
            &[EMBED, Some("q_heads"), Some("kv")],
            fan_in(e),
        ),
        p("attention/attention/key/kernel", &[e, hkv, dh], &["embed", "kv_heads", "head_dim"], &kv, fan_in(e)),
        p("attention/attention/value/kernel", &[e, hkv, dh], &["embed", "kv_heads", "head_dim"], &kv, fan_in(e)),
        p("attention/attention/out/kernel", &[hq * dh, e], &["q_dim", "embed"], &[Some("mlp"), EMBED], fan_in(hq * dh)),
        norm("attention/attention/query_norm/scale", dh, "head_dim", false),
        norm("attention/attention/key_norm/scale", dh, "head_dim", false),
    ]
}

/// The sparse MoE block of one layer: router, routed experts, shared expert and its sigmoid gate.
fn moe(cfg: &ModelConfig) -> Vec<P> {
    let (e, x, i, s) = (cfg.emb_dim, cfg.num_experts, cfg.moe_mlp_dim, cfg.shared_expert_mlp_dim);
    let (exp, embed_moe, mlp_moe, mlp) = (Some("exp"), Some("embed_moe"), Some("mlp_moe"), Some("mlp"));
    let mut v = vec![
        p("mlp/routed_experts/gate/kernel", &[e, x], &["embed", "experts"], &[EMBED, None], fan_in(e)),
        p(
            "mlp/routed_experts/wi_0",
            &[x, e, i],
            &["experts", "embed", "moe_mlp"],
            &[exp, embed_moe, mlp_moe],
            fan_in(e),
        ),
        p(
            "mlp/routed_experts/wi_1",
            &[x, e, i],
            &["experts", "embed", "moe_mlp"],
            &[exp, embed_moe, mlp_moe],
            fan_in(e),
        ),
        p("mlp/routed_experts/wo", &[x, i, e], &["experts", "moe_mlp", "embed"], &[exp, mlp_moe, embed_moe], fan_in(i)),
    ];
    if cfg.shared_experts > 0 {
        v.extend([
            p("mlp/shared_expert/wi_0/kernel", &[e, s], &["embed", "shared_mlp"], &[EMBED, mlp], fan_in(e)),
            p("mlp/shared_expert/wi_1/kernel", &[e, s], &["embed", "shared_mlp"], &[EMBED, mlp], fan_in(e)),
            p("mlp/shared_expert/wo/kernel", &[s, e], &["shared_mlp", "embed"], &[mlp, EMBED], fan_in(s)),
            // MaxText keeps this gate in f32 whatever weight_dtype is.
            P {
                dtype: Some(DType::F32),
                ..p("mlp/shared_expert_gate/kernel", &[e, 1], &["embed", "one"], &[EMBED, None], fan_in(e))
            },
        ]);
    }
    v
}

/// Every parameter of one decoder layer, in MaxText's attribute order.
fn layer(cfg: &ModelConfig, full: bool) -> Vec<P> {
    let mut v = vec![norm("input_layernorm/scale", cfg.emb_dim, "embed", false)];
    v.extend(if full { full_attention(cfg) } else { gdn(cfg) });
    v.extend(moe(cfg));
    v.push(norm("post_attention_layernorm/scale", cfg.emb_dim, "embed", false));
    v
}

/// Turns per-layer params into decls under `prefix`, with `stack` scan axes at `min(1, rank)`.
fn declare(out: &mut Vec<ParamDecl>, prefix: &str, params: Vec<P>, stack: &[(AxisName, i64)], weight_dtype: DType) {
    for param in params {
        let at = scan_position(param.dims.len());
        let (mut dims, mut axes, mut logical) = (param.dims, param.axes, param.logical);
        for (k, (name, size)) in stack.iter().enumerate() {
            dims.insert(at + k, *size);
            axes.insert(at + k, name);
            logical.insert(at + k, None);
        }
        out.push(ParamDecl {
            path: format!("{prefix}/{}", param.name),
            dims,
            axes,
            logical,
            dtype: param.dtype.unwrap_or(weight_dtype),
            init: param.init,
            scan_axes: stack.len(),
        });
    }
}

/// The Qwen3-Next parameter tree (paths below `params/params/`). Scanned (`scan_layers=true`): MaxText
/// 0.2.5's `decoder/layers/local_layers/...` (Gated DeltaNet, scan axes `[blocks, interval-1]`) and
/// `decoder/layers/global_layer/...` (full attention, `[blocks]`); unscanned: `decoder/layers_{l}/...`.
///
/// Panics when scanning a layer count that is not a multiple of `inhomogeneous_layer_cycle_interval`
/// (MaxText cannot scan that either).
pub fn qwen3_next_decls(cfg: &ModelConfig, scan_layers: bool, weight_dtype: DType) -> Vec<ParamDecl> {
    let mut out = Vec::new();
    let e = cfg.emb_dim;
    declare(
        &mut out,
        "token_embedder",
        vec![p(
            "embedding",
            &[cfg.vocab_size, e],
            &["vocab", "embed"],
            &[Some("vocab"), Some("embed_vocab")],
            fan_in(e),
        )],
        &[],
        weight_dtype,
    );
    let interval = cfg.inhomogeneous_layer_cycle_interval;
    if scan_layers {
        assert!(
            interval > 0 && cfg.num_decoder_layers.is_multiple_of(interval),
            "scan_layers needs base_num_decoder_layers ({}) to be a multiple of inhomogeneous_layer_cycle_interval ({interval})",
            cfg.num_decoder_layers
        );
        let blocks = (cfg.num_decoder_layers / interval) as i64;
        if interval > 1 {
            let stack = [("layers", blocks), ("local_layers", interval as i64 - 1)];
            declare(&mut out, "decoder/layers/local_layers", layer(cfg, false), &stack, weight_dtype);
        }
        declare(&mut out, "decoder/layers/global_layer", layer(cfg, true), &[("layers", blocks)], weight_dtype);
    } else {
        for l in 0..cfg.num_decoder_layers {
            declare(&mut out, &format!("decoder/layers_{l}"), layer(cfg, cfg.is_full_attention(l)), &[], weight_dtype);
        }
    }
    declare(&mut out, "decoder", vec![norm("decoder_norm/scale", e, "embed", false)], &[], weight_dtype);
    if !cfg.logits_via_embedding {
        let logits = p(
            "logits_dense/kernel",
            &[e, cfg.vocab_size],
            &["embed", "vocab"],
            &[Some("embed_vocab"), Some("vocab")],
            fan_in(e),
        );
        declare(&mut out, "decoder", vec![logits], &[], weight_dtype);
    }
    out
}
