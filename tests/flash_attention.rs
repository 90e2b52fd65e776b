//! `attention=flash` (blockwise attention with an online softmax, `src/nn/flash_attention.rs`) against
//! `attention=dot_product` on the real XLA CPU plugin: the gated attention layer over a sequence of many
//! ragged blocks with packed segments and padding (output, gradients through the autodiff, prefill caches),
//! and the whole model's logits on the HF fixture. Also the config rules of `attention`. The golden checks
//! against HF / torch with flash are in `check_logits_cli.rs`, `train_vs_torch.rs` and `decode_greedy.rs`;
//! the compiled memory at 8192 tokens in `check_logits_cli.rs`.

mod common;

use common::{data, run_program, wsum};
use maxtext::autodiff::value_and_grad;
use maxtext::checkpoint::hf;
use maxtext::config::{AttentionKernel, Config, Hardware};
use maxtext::emit::emit_program;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::nn::{GatedAttention, Init, ParamBuilder, ParamDecl};
use maxtext::program::forward_program;
use maxtext::runtime::HostTensor;
use std::path::Path;

const BATCH: i64 = 2;
/// 45 tokens in query blocks of 8 (the last one 5) and key blocks of 6: every query block but the first
/// runs the key loop, most end with a shorter key block (40 = 6·6 + 4), and segments cross block borders.
const SEQ: i64 = 45;
const FLASH: AttentionKernel = AttentionKernel::Flash { block_q: 8, block_kv: 6, min_seq: 0 };

fn config(extra: &[&str]) -> Config {
    let mut o: Vec<String> = ["model_name=qwen3-next-tiny", "dtype=float32", "weight_dtype=float32"].iter().map(|s| s.to_string()).collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load_with_env(Path::new("configs/base.yml"), &o, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// The tiny model's attention layer (4 query heads over 2 KV heads of 32: GQA groups of 2) traced with
/// `kernel`: arguments params, x [batch, seq, embed], positions, segment ids; results wsum(output), the
/// output, the prefill output and its k, v caches, then the gradients of wsum(output) for params and x.
fn layer_program(kernel: AttentionKernel) -> (Program, Vec<ParamDecl>) {
    let cfg = config(&[]);
    let e = cfg.model.emb_dim as i64;
    let g = Graph::new();
    let mut pb = ParamBuilder::new(&g, DType::F32, DType::F32);
    pb.attention = kernel;
    let layer = GatedAttention::new(&cfg.model, &mut pb);
    let x = g.param(TensorType::named(DType::F32, &[BATCH, SEQ, e], &["batch", "seq", "embed"]));
    let int = || g.param(TensorType::named(DType::S32, &[BATCH, SEQ], &["batch", "seq"]));
    let (positions, segments) = (int(), int());
    let out = layer.forward(&x, &positions, Some(&segments));
    let (hkv, dh) = (cfg.model.num_kv_heads as i64, cfg.model.head_dim as i64);
    let cache = || g.zeros(DType::F32, &[BATCH, SEQ, hkv, dh]).named(&["batch", "kv_seq", "kv_heads", "head_dim"]);
    let (prefill_out, ck, cv) = layer.prefill(&x, &positions, &segments, &cache(), &cache());
    let f = g.finish(&[wsum(&out, 1), out, prefill_out, ck, cv]);
    let n = pb.decls.len();
    (Program::new("attention_layer", value_and_grad(&f, &(0..=n).collect::<Vec<_>>())), pb.decls)
}

/// Random values around each parameter's initialiser (not the initialiser itself: ones and zeros would
/// hide terms), then x, then positions restarting at every segment: row 0 one segment, row 1 three packed
/// segments and padding (segment 0).
fn layer_inputs(decls: &[ParamDecl], emb: i64) -> Vec<HostTensor> {
    let mut inputs: Vec<HostTensor> = decls
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let n = d.num_elements() as usize;
            let (lo, hi) = match &d.init {
                Init::Normal { stddev } => (-1.7 * *stddev, 1.7 * *stddev),
                Init::Ones => (0.7, 1.3),
                _ => (-0.3, 0.3),
            };
            HostTensor::from_f32(&data(n, 100 + k as u64, lo as f32, hi as f32), &d.dims)
        })
        .collect();
    inputs.push(HostTensor::from_f32(&data((BATCH * SEQ * emb) as usize, 50, -1.5, 1.5), &[BATCH, SEQ, emb]));
    let mut segments = vec![1; SEQ as usize];
    for (seg, len) in [(1, 13), (2, 20), (3, 7), (0, 5)] {
        segments.extend(std::iter::repeat_n(seg, len));
    }
    let mut positions = Vec::new();
    for row in segments.chunks(SEQ as usize) {
        let mut p = 0;
        for (i, s) in row.iter().enumerate() {
            p = if i > 0 && row[i - 1] == *s { p + 1 } else { 0 };
            positions.push(p);
        }
    }
    inputs.push(HostTensor::from_i32(&positions, &[BATCH, SEQ]));
    inputs.push(HostTensor::from_i32(&segments, &[BATCH, SEQ]));
    inputs
}

/// max |a − b| / max(max |b|, 1e-30).
fn rel_diff(a: &HostTensor, b: &HostTensor) -> f64 {
    let (a, b) = (a.to_f64(), b.to_f64());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale.max(1e-30)
}

/// Output, prefill caches and every gradient of the layer with flash equal dot product's.
#[test]
fn flash_layer_equals_dot_product_with_gradients() {
    let (dot, decls) = layer_program(AttentionKernel::DotProduct);
    let (flash, _) = layer_program(FLASH);
    let mlir = |p: &Program| emit_program(p);
    assert!(!mlir(&dot).contains("stablehlo.while"), "the dot-product layer has no loop");
    assert!(mlir(&flash).contains("stablehlo.while"), "the flash layer runs its key blocks in a loop");
    let inputs = layer_inputs(&decls, config(&[]).model.emb_dim as i64);
    let (want, got) = (run_program(&dot, &inputs), run_program(&flash, &inputs));
    let abs = |i: usize| got[i].to_f64().iter().zip(want[i].to_f64()).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    let names = ["loss", "output", "prefill output", "prefill k cache", "prefill v cache"];
    for (i, name) in names.iter().enumerate() {
        let d = abs(i);
        eprintln!("{name}: max |flash - dot| = {d:.2e}");
        assert!(d <= 1e-5, "{name}: flash differs from dot product by {d:.2e}");
    }
    let grad_names = decls.iter().map(|d| d.path.as_str()).chain(["x"]);
    for (k, name) in grad_names.enumerate() {
        let i = names.len() + k;
        let r = rel_diff(&got[i], &want[i]);
        eprintln!("d/d {name}: max |flash - dot| / max |dot| = {r:.2e}");
        assert!(want[i].to_f64().iter().any(|v| *v != 0.0), "d/d {name} is all zero: the check would be vacuous");
        assert!(r <= 1e-5, "gradient for {name}: flash differs from dot product by {r:.2e} of its largest element");
    }
}

/// The whole model's logits on the HF fixture's 100-token prompt (query blocks of 16, key blocks of 12)
/// with flash equal dot product's within 1e-5.
#[test]
fn flash_model_logits_equal_dot_product_on_hf_fixture() {
    let dir = common::shipped("hf/qwen3-next-tiny");
    let tokens: Vec<i32> = common::golden_lines(&dir, "golden_logits")
        .iter()
        .map(|v| v["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect::<Vec<_>>())
        .max_by_key(|t| t.len())
        .unwrap();
    let seq = tokens.len() as i64;
    assert!(seq > 64, "the longest golden prompt ({seq} tokens) should span several blocks");
    let logits = |attention: &[&str]| {
        let mut o = hf::read_config_overrides(&dir).unwrap();
        o.extend(["dtype=float32", "weight_dtype=float32"].iter().chain(attention).map(|s| s.to_string()));
        let cfg = Config::load(Path::new("configs/base.yml"), &o).unwrap();
        let fp = forward_program(&cfg, 1, seq).unwrap();
        let mut args = vec![HostTensor::from_i32(&tokens, &[1, seq]), HostTensor::from_i32(&(0..seq as i32).collect::<Vec<_>>(), &[1, seq])];
        args.extend(hf::load_params(&dir, &fp.decls, &cfg.model).unwrap());
        run_program(&fp.program, &args).remove(0).to_f64()
    };
    let dot = logits(&["attention=dot_product"]);
    let flash = logits(&["attention=flash", "sa_block_q=16", "sa_block_kv=12"]);
    let d = flash.iter().zip(&dot).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    let scale = dot.iter().fold(0f64, |m, v| m.max(v.abs()));
    eprintln!("logits [1, {seq}, vocab]: max |flash - dot| = {d:.2e} (max |logit| {scale:.2})");
    assert!(d <= 1e-5, "logits with flash differ from dot product by {d:.2e}");
}

#[test]
fn attention_keys_select_the_kernel() {
    assert_eq!(config(&[]).compute.attention_kernel(Hardware::Cpu), AttentionKernel::DotProduct, "autoselected on cpu");
    let flash = |min_seq| AttentionKernel::Flash { block_q: 512, block_kv: 512, min_seq };
    for hw in [Hardware::Tpu, Hardware::Gpu] {
        assert_eq!(config(&[]).compute.attention_kernel(hw), flash(128), "MaxText's autoselected on {hw}: flash from 128 tokens");
        assert_eq!(config(&["attention=dot_product"]).compute.attention_kernel(hw), AttentionKernel::DotProduct);
    }
    assert_eq!(config(&["attention=flash"]).compute.attention_kernel(Hardware::Cpu), flash(0));
    let blocks = config(&["attention=flash", "sa_block_q=64", "sa_block_kv=32"]).compute.attention_kernel(Hardware::Cpu);
    assert_eq!(blocks, AttentionKernel::Flash { block_q: 64, block_kv: 32, min_seq: 0 });
}

#[test]
fn unbuilt_attention_kernels_are_refused() {
    for kind in ["cudnn_flash_te", "cudnn_flash_jax", "paged"] {
        let o = vec!["model_name=qwen3-next-tiny".to_string(), format!("attention={kind}")];
        let Err(err) = Config::load_with_env(Path::new("configs/base.yml"), &o, &|_| None) else { panic!("attention={kind} was accepted") };
        let err = err.to_string();
        assert!(err.contains(&format!("attention={kind}")) && err.contains("`flash`") && err.contains("`dot_product`"), "{err}");
    }
    let o = vec!["attention=flash".to_string(), "sa_block_kv=0".to_string()];
    let Err(err) = Config::load_with_env(Path::new("configs/base.yml"), &o, &|_| None) else { panic!("sa_block_kv=0 was accepted") };
    let err = err.to_string();
    assert!(err.contains("sa_block_kv"), "{err}");
}
