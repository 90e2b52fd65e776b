//! Finite-difference checks of whole layers' gradients (value_and_grad through every VJP rule they use) on
//! the real XLA CPU plugin: Gated DeltaNet over 3 chunks (10 tokens, chunks of 4: the chunk loop, padding
//! and the triangular solve), gated full attention (packed segments + padding), the sparse MoE (router
//! top-2), and the whole scanned model with 2 blocks (embedding, block / local-layer / chunk loops nested,
//! lm head).
//!
//! Directional derivatives: for each parameter tensor p (and the layer input) a random direction d scaled
//! like p; the central difference `(L(p + h d) - L(p - h d)) / 2h` minus `grad·d` (for the perturbation
//! actually applied after rounding to p's dtype), with one Richardson step (h, h/2) to cancel the O(h²)
//! term, at two step sizes h and h/4 (the larger wins where rounding noise dominates, the smaller where
//! curvature does); the better of the two must be within `RTOL = 5e-3` of `max(|grad·d|, ||grad ⊙ d||₂)`
//! (a scale that does not vanish when the terms of grad·d cancel). Observed worst: ~3e-4.
//!
//! Precision: the layers keep statistics in f32 whatever the compute dtype (norms, softmax, the whole delta
//! rule, router weights: `convert(F32)` in src/nn), so building them with f64 weights and compute dtype runs
//! end to end but is not f64 end to end; the loss still carries f32 rounding (~1e-7). Each layer is checked
//! both ways: f64 weights + compute (most ops f64) and f32 weights + compute (the training configuration).
//! The decoder runs with f64 weights + compute.
//!
//! Discontinuities: the MoE layer returns its router's top-2 indices as a second result, which must not
//! change under any perturbation (no near-ties). The decoder cannot expose its 12 routing decisions, so it
//! uses top-4 of 4 experts there (top_k still runs and is differentiated, but cannot switch experts).

mod common;

use common::{data, run_program, wsum};
use maxtext::autodiff::value_and_grad;
use maxtext::config::Config;
use maxtext::ir::{DType, Func, Graph, Program, Tensor, TensorType};
use maxtext::model::{self, ForwardInputs};
use maxtext::nn::{GatedAttention, GatedDeltaNet, Init, ParamBuilder, ParamDecl, SparseMoe};
use maxtext::runtime::HostTensor;
use std::path::Path;

const BATCH: i64 = 2;
const SEQ: i64 = 10;

/// Relative tolerance of a directional derivative (see the module doc).
const RTOL: f64 = 5e-3;

/// A tiny Qwen3-Next: emb 16, 2 query / 1 kv heads of 8, GDN 1 key head of 8 / 2 value heads of 4 with
/// chunks of 4 (10 tokens = 3 chunks), 4 experts (top 2) of 8, shared expert of 8, vocab 64.
fn config(extra: &[&str]) -> Config {
    let mut o: Vec<String> = [
        "model_name=qwen3-next-tiny",
        "override_model_config=true",
        "vocab_size=64",
        "base_emb_dim=16",
        "base_num_query_heads=2",
        "base_num_kv_heads=1",
        "head_dim=8",
        "base_mlp_dim=8",
        "base_moe_mlp_dim=8",
        "num_experts=4",
        "num_experts_per_tok=2",
        "shared_expert_mlp_dim=8",
        "gdn_key_head_dim=8",
        "gdn_value_head_dim=4",
        "gdn_num_key_heads=1",
        "gdn_num_value_heads=2",
        "gdn_chunk_size=4",
        "dtype=float32",
        "weight_dtype=float32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load_with_env(Path::new("configs/base.yml"), &o, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}



fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    data(n, seed, 0.0, 1.0).iter().map(|u| lo + (hi - lo) * *u as f64).collect()
}

/// A float input of the check: a parameter (from its declaration) or an activation.
struct FloatInput {
    name: String,
    /// Index among the function's parameters.
    index: usize,
    /// Scale of the random direction: about the magnitude of the values (of `1 + w` for norm scales).
    scale: f64,
}

/// Values for a declaration: not its initialiser (zeros / ones would hide terms of the gradient) but random
/// values of the same spread around it; and the direction scale.
fn param_values(d: &ParamDecl, seed: u64) -> (Vec<f64>, f64) {
    let n = d.num_elements() as usize;
    match &d.init {
        Init::Normal { stddev } => (uniform(n, seed, -1.7 * stddev, 1.7 * stddev), *stddev),
        Init::Zeros => (uniform(n, seed, -0.3, 0.3), 1.0),
        Init::Ones => (uniform(n, seed, 0.7, 1.3), 1.0),
        Init::Uniform { lo, hi } => (uniform(n, seed, *lo, *hi), (hi - lo) / 2.0),
        // GDN `A_log` (init ln U(1, 16)): decays e^{A} softplus(..) of up to ~20 per token would wipe out the
        // state between chunks (and make the loss so curved in x that h = 1e-2 is too coarse); ln U(0.02, 0.3)
        // keeps e^{Γ} over a chunk of 4 within 0.05–1, so the chunk loop's state carries gradient.
        Init::LogUniform { .. } => (uniform(n, seed, 0.02, 0.3).iter().map(|v| v.ln()).collect(), 0.5),
    }
}

fn host(values: &[f64], dims: &[i64], dtype: DType) -> HostTensor {
    match dtype {
        DType::F64 => HostTensor::from_f64(values, dims),
        _ => HostTensor::from_f32_as(&values.iter().map(|v| *v as f32).collect::<Vec<_>>(), dims, dtype),
    }
}

/// Adds the declarations' random values to `inputs` (at each declaration's parameter index).
fn add_params(decls: &[ParamDecl], first: usize, inputs: &mut Vec<Option<HostTensor>>, floats: &mut Vec<FloatInput>, seed: u64) {
    for (k, d) in decls.iter().enumerate() {
        let (v, scale) = param_values(d, seed + k as u64);
        let i = first + k;
        if inputs.len() <= i {
            inputs.resize(i + 1, None);
        }
        inputs[i] = Some(host(&v, &d.dims, d.dtype));
        floats.push(FloatInput { name: d.path.clone(), index: i, scale });
    }
}

/// Checks the directional derivative of `f` (results[0] the loss) along a random direction per float input;
/// integer inputs must get all-zero gradients. A second result of `f` (e.g. router choices) is a guard: it
/// must not change under any perturbation. Returns the worst relative error.
fn check_directions(name: &str, f: Func, inputs: &[HostTensor], floats: &[FloatInput], h: f64) -> f64 {
    for (ty, x) in f.params.iter().zip(inputs) {
        assert_eq!((ty.dtype, &ty.dims), (x.dtype, &x.dims), "{name}: input types");
    }
    let wrt: Vec<usize> = (0..inputs.len()).collect();
    let nres = f.results.len();
    let t0 = std::time::Instant::now();
    let grad_prog = Program::new(&format!("{name}_grad"), value_and_grad(&f, &wrt));
    let fwd = Program::new(name, f);
    let out = run_program(&grad_prog, inputs);
    let base = run_program(&fwd, inputs);
    eprintln!("{name}: value_and_grad and forward compiled and run in {:.1} s", t0.elapsed().as_secs_f64());
    let l0 = base[0].to_f64()[0];
    let lv = out[0].to_f64()[0];
    assert!((lv - l0).abs() <= 1e-5 * (1.0 + l0.abs()), "{name}: value_and_grad loss {lv} vs forward {l0}");
    assert_eq!(out.len(), nres + inputs.len(), "{name}: value_and_grad results");
    for (i, x) in inputs.iter().enumerate() {
        let g = &out[nres + i];
        assert_eq!((g.dtype, &g.dims), (x.dtype, &x.dims), "{name}: gradient {i} has the wrong type");
        if !x.dtype.is_float() {
            assert!(g.to_f64().iter().all(|v| *v == 0.0), "{name}: integer input {i} got a gradient");
        }
    }
    let loss = |xs: &[HostTensor]| {
        let r = run_program(&fwd, xs);
        if let (Some(got), Some(want)) = (r.get(1), base.get(1)) {
            assert_eq!(got.data, want.data, "{name}: a perturbation changed the guarded discrete choice (near-tie)");
        }
        r[0].to_f64()[0]
    };
    let mut worst = 0f64;
    for (k, fi) in floats.iter().enumerate() {
        let x = &inputs[fi.index];
        let p = x.to_f64();
        let g = out[nres + fi.index].to_f64();
        let d = uniform(p.len(), 7000 + k as u64, -fi.scale, fi.scale);
        let gd: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
        let norm: f64 = g.iter().zip(&d).map(|(a, b)| (a * b).powi(2)).sum::<f64>().sqrt();
        // e(h) = finite difference - analytic, both for the perturbation actually applied.
        let e = |h: f64| {
            let side = |s: f64| {
                let v: Vec<f64> = p.iter().zip(&d).map(|(a, b)| a + s * h * b).collect();
                let t = host(&v, &x.dims, x.dtype);
                let applied = t.to_f64();
                let mut xs = inputs.to_vec();
                xs[fi.index] = t;
                (loss(&xs), applied)
            };
            let ((lp, vp), (lm, vm)) = (side(1.0), side(-1.0));
            let dg: f64 = g.iter().zip(vp.iter().zip(&vm)).map(|(g, (a, b))| g * (a - b)).sum();
            ((lp - lm) - dg) / (2.0 * h)
        };
        let scale = gd.abs().max(norm);
        let richardson = |h: f64| {
            let (e1, e2) = (e(h), e(h / 2.0));
            let err = ((4.0 * e2 - e1) / 3.0).abs();
            // A direction with no effect at all (scale 0) must show none in the differences either.
            if scale > 0.0 { err / scale } else { err * 1e6 }
        };
        // Two step sizes: the larger one wins where f32 rounding noise dominates (directions the loss is
        // not very sensitive to), the smaller one where curvature does (deep in the scanned decoder).
        let steps = [(h, richardson(h)), (h / 4.0, richardson(h / 4.0))];
        let rel = steps[0].1.min(steps[1].1);
        worst = worst.max(rel);
        let [(h1, r1), (h2, r2)] = steps;
        eprintln!("{name}: {:<58} grad·d {gd:+.6e}  rel err {r1:.1e} at h {h1:.1e}, {r2:.1e} at h {h2:.1e}", fi.name);
        assert!(
            rel <= RTOL,
            "{name}: {}: grad·d = {gd:e}, Richardson FD differs by {:e} relative (> {RTOL:e}) at steps {steps:?}",
            fi.name,
            rel
        );
    }
    eprintln!("{name}: {} directions, worst relative error {worst:.2e}, {:.1} s", floats.len(), t0.elapsed().as_secs_f64());
    worst
}

/// One layer over x [batch, seq, embed]: `new` declares the layer's parameters, then x and the integer
/// inputs ([batch, seq]) are declared and `forward` gives (output, optional guard). Loss: `wsum(output)`.
fn layer_check<L>(
    name: &str,
    (weight, compute): (DType, DType),
    ints: &[HostTensor],
    h: f64,
    new: impl FnOnce(&Config, &mut ParamBuilder) -> L,
    forward: impl FnOnce(&L, &Tensor, &[Tensor]) -> (Tensor, Option<Tensor>),
) -> f64 {
    let cfg = config(&[]);
    let e = cfg.model.emb_dim as i64;
    let g = Graph::new();
    let mut pb = ParamBuilder::new(&g, weight, compute);
    let layer = new(&cfg, &mut pb);
    let n = pb.decls.len();
    let x = g.param(TensorType::named(compute, &[BATCH, SEQ, e], &["batch", "seq", "embed"]));
    let it: Vec<Tensor> = ints.iter().map(|t| g.param(TensorType::named(t.dtype, &t.dims, &["batch", "seq"]))).collect();
    let (out, guard) = forward(&layer, &x, &it);
    let mut res = vec![wsum(&out, 1)];
    res.extend(guard);
    let func = g.finish(&res);

    let mut inputs: Vec<Option<HostTensor>> = vec![None; n + 1 + ints.len()];
    let mut floats = Vec::new();
    add_params(&pb.decls, 0, &mut inputs, &mut floats, 100);
    let xv = uniform((BATCH * SEQ * e) as usize, 50, -1.5, 1.5);
    inputs[n] = Some(host(&xv, &[BATCH, SEQ, e], compute));
    floats.push(FloatInput { name: "x (layer input)".into(), index: n, scale: 1.0 });
    for (k, t) in ints.iter().enumerate() {
        inputs[n + 1 + k] = Some(t.clone());
    }
    let inputs: Vec<HostTensor> = inputs.into_iter().map(|t| t.expect("every input set")).collect();
    check_directions(name, func, &inputs, &floats, h)
}

/// positions 0..seq per row; segments: row 0 one segment, row 1 two packed segments and padding (0).
fn positions_and_segments() -> [HostTensor; 2] {
    let pos: Vec<i32> = (0..BATCH * SEQ).map(|i| (i % SEQ) as i32).collect();
    let mut seg = vec![1i32; SEQ as usize];
    seg.extend([1, 1, 1, 1, 2, 2, 2, 2, 0, 0]);
    [HostTensor::from_i32(&pos, &[BATCH, SEQ]), HostTensor::from_i32(&seg, &[BATCH, SEQ])]
}

const F64: (DType, DType) = (DType::F64, DType::F64);
const F32: (DType, DType) = (DType::F32, DType::F32);

#[test]
fn gated_delta_net() {
    for dt in [F64, F32] {
        layer_check(&format!("gdn_{:?}", dt.0), dt, &[], 3e-2, |cfg, pb| GatedDeltaNet::new(&cfg.model, pb), |l, x, _| {
            (l.forward(x, None), None)
        });
    }
}

#[test]
fn gated_attention() {
    let ints = positions_and_segments();
    for dt in [F64, F32] {
        layer_check(&format!("attention_{:?}", dt.0), dt, &ints, 3e-2, |cfg, pb| GatedAttention::new(&cfg.model, pb), |l, x, i| {
            (l.forward(x, &i[0], Some(&i[1])), None)
        });
    }
}

#[test]
fn sparse_moe() {
    // The router's top-2 choices are a second result: no perturbation may change them (no near-ties), hence
    // the smaller step.
    for dt in [F64, F32] {
        layer_check(&format!("moe_{:?}", dt.0), dt, &[], 1e-2, |cfg, pb| SparseMoe::new(&cfg.model, pb), |l, x, _| {
            let (_, _, logits) = l.route_top_k(x);
            (l.forward(x), Some(logits.top_k(2).1))
        });
    }
}

/// The whole model, scanned: 2 blocks of (2 GDN layers in the inner `local_layers` loop + 1 attention
/// layer), token embedding and lm head, packed segments; loss `wsum(logits)`.
#[test]
fn scanned_decoder() {
    let blocks = ["base_num_decoder_layers=6", "inhomogeneous_layer_cycle_interval=3", "scan_layers=true"];
    let cfg = config(&[&blocks[..], &["num_experts_per_tok=4"]].concat());
    let g = Graph::new();
    let mut pb = ParamBuilder::new(&g, DType::F64, DType::F64);
    let bt = || g.param(TensorType::named(DType::S32, &[BATCH, SEQ], &["batch", "seq"]));
    let (tokens, positions, segs) = (bt(), bt(), bt());
    let inputs = ForwardInputs { tokens, positions, segment_ids: Some(segs) };
    let logits = model::forward(&cfg.model, &mut pb, &inputs, true);
    let func = g.finish(&[wsum(&logits, 2)]);
    assert!(pb.decls.iter().any(|d| d.scan_axes == 2), "the GDN params are stacked over blocks and local layers");
    let tokens: Vec<i32> = data((BATCH * SEQ) as usize, 60, 0.0, 64.0).iter().map(|v| *v as i32).collect();
    let [pos, seg] = positions_and_segments();
    let mut inputs = vec![Some(HostTensor::from_i32(&tokens, &[BATCH, SEQ])), Some(pos), Some(seg)];
    let mut floats = Vec::new();
    add_params(&pb.decls, 3, &mut inputs, &mut floats, 300);
    let inputs: Vec<HostTensor> = inputs.into_iter().map(|t| t.expect("every input set")).collect();
    check_directions("decoder_F64", func, &inputs, &floats, 1e-2);
}
