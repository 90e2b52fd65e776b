//! On-device sampling (`decode_sampling_strategy` and friends) on the real XLA CPU plugin: greedy is the
//! argmax; seeded sampling is reproducible; weighted, top-k and nucleus draw with the right frequencies and
//! never outside their candidate sets.

use maxtext::config::{Config, DecodeConfig};
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::sample;
use maxtext::runtime::{HostTensor, Runtime};
use std::path::Path;
use std::sync::OnceLock;

fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap()))
}

fn decode_cfg(overrides: &[&str]) -> DecodeConfig {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::load(Path::new("configs/base.yml"), &o).unwrap().decode
}

/// Samples one token per row from `rows` copies of `logits`; returns the tokens and the new rng state.
fn draw(cfg: &DecodeConfig, logits: &[f32], rows: usize, seed: u64) -> (Vec<i64>, Vec<u64>) {
    let v = logits.len() as i64;
    let g = Graph::new();
    let l = g.param(TensorType::new(DType::F32, &[rows as i64, v]));
    let rng = g.param(TensorType::new(DType::U64, &[2]));
    let (tok, rng) = sample(cfg, &l, &rng);
    let p = Program::new("sample", g.finish(&[tok, rng]));
    let all: Vec<f32> = (0..rows).flat_map(|_| logits.iter().cloned()).collect();
    let out = rt().run(&p, &[HostTensor::from_f32(&all, &[rows as i64, v]), HostTensor::from_u64(&[seed, 0], &[2])]).unwrap();
    (out[0].to_i64(), out[1].to_u64())
}

fn freqs(tokens: &[i64], n: usize) -> Vec<f64> {
    let mut f = vec![0.0; n];
    for &t in tokens {
        f[t as usize] += 1.0 / tokens.len() as f64;
    }
    f
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Frequencies within 5 standard errors of the expected probabilities.
fn assert_freqs(tokens: &[i64], want: &[f64]) {
    let f = freqs(tokens, want.len());
    let n = tokens.len() as f64;
    for (i, (a, p)) in f.iter().zip(want).enumerate() {
        let se = (p * (1.0 - p) / n).sqrt().max(1e-9);
        assert!((a - p).abs() <= 5.0 * se + 1e-12, "token {i}: frequency {a:.4} vs probability {p:.4} (freqs {f:?})");
    }
}

const LOGITS: [f32; 5] = [1.0, 2.5, 0.3, 2.0, -1.0];
const ROWS: usize = 4000;

#[test]
fn greedy_is_the_argmax() {
    let (t, _) = draw(&decode_cfg(&["decode_sampling_strategy=greedy"]), &LOGITS, 8, 1);
    assert!(t.iter().all(|&x| x == 1), "{t:?}");
}

#[test]
fn weighted_follows_softmax_over_temperature_and_is_seeded() {
    let cfg = decode_cfg(&["decode_sampling_strategy=weighted", "decode_sampling_temperature=0.7"]);
    let (a, s1) = draw(&cfg, &LOGITS, ROWS, 42);
    let (b, _) = draw(&cfg, &LOGITS, ROWS, 42);
    let (c, _) = draw(&cfg, &LOGITS, ROWS, 43);
    assert_eq!(a, b, "same seed, same draws");
    assert_ne!(a, c, "another seed, other draws");
    assert_ne!(s1, vec![42, 0], "the rng state advances");
    let want = softmax(&LOGITS.iter().map(|&l| l as f64 / 0.7).collect::<Vec<_>>());
    assert_freqs(&a, &want);
}

#[test]
fn top_k_draws_only_from_the_k_best() {
    let cfg = decode_cfg(&["decode_sampling_strategy=topk", "decode_sampling_top_k=2", "decode_sampling_temperature=1.0"]);
    let (t, _) = draw(&cfg, &LOGITS, ROWS, 7);
    let p = softmax(&[2.5, 2.0]);
    assert_freqs(&t, &[0.0, p[0], 0.0, p[1], 0.0]);
    let one = decode_cfg(&["decode_sampling_strategy=topk", "decode_sampling_top_k=1"]);
    assert!(draw(&one, &LOGITS, 16, 9).0.iter().all(|&x| x == 1), "top-1 is greedy");
}

#[test]
fn nucleus_keeps_the_smallest_prefix_reaching_p() {
    let probs = softmax(&LOGITS.iter().map(|&l| l as f64).collect::<Vec<_>>());
    // Sorted: token 1 (~0.50), token 3 (~0.30), token 0, token 2, token 4.
    let cfg = decode_cfg(&["decode_sampling_strategy=nucleus", "decode_sampling_nucleus_p=0.7"]);
    let (t, _) = draw(&cfg, &LOGITS, ROWS, 5);
    let kept = probs[1] + probs[3];
    assert_freqs(&t, &[0.0, probs[1] / kept, 0.0, probs[3] / kept, 0.0]);
    let tight = decode_cfg(&["decode_sampling_strategy=nucleus", "decode_sampling_nucleus_p=0.1"]);
    assert!(draw(&tight, &LOGITS, 16, 3).0.iter().all(|&x| x == 1), "a tiny p keeps only the top token");
}
