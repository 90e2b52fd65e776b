//! MaxText's MoE load-balancing loss (`load_balance_loss_weight`): the per-layer formula against a host
//! computation, and `maxtext train` adding it to the loss (`learning/moe_lb_loss`, `learning/lm_loss`).

use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::nn::SparseMoe;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::runtime::{HostTensor, Runtime};
use std::process::Command;

#[test]
fn per_layer_formula_matches_the_reference() {
    let (b, t, e, k) = (2usize, 5usize, 4usize, 2usize);
    let logits: Vec<f32> = (0..b * t * e).map(|i| ((i * 37 % 23) as f32 - 11.0) / 5.0).collect();
    // Top-k choices on the host: the k largest logits of each token.
    let mut counts = vec![0f32; b * t * e];
    for tok in 0..b * t {
        let row = &logits[tok * e..(tok + 1) * e];
        let mut idx: Vec<usize> = (0..e).collect();
        idx.sort_by(|&x, &y| row[y].partial_cmp(&row[x]).unwrap());
        for &i in &idx[..k] {
            counts[tok * e + i] = 1.0;
        }
    }
    // mean_{b,e}(density · prob) · E², density = mean_t counts, prob = mean_t softmax.
    let mut want = 0f64;
    for bi in 0..b {
        for ei in 0..e {
            let (mut dens, mut prob) = (0f64, 0f64);
            for ti in 0..t {
                let row = &logits[(bi * t + ti) * e..(bi * t + ti + 1) * e];
                let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let z: f64 = row.iter().map(|v| (*v as f64 - m).exp()).sum();
                prob += (row[ei] as f64 - m).exp() / z / t as f64;
                dens += counts[(bi * t + ti) * e + ei] as f64 / t as f64;
            }
            want += dens * prob;
        }
    }
    want = want / (b * e) as f64 * (e * e) as f64;

    let g = Graph::new();
    let l = g.param(TensorType::named(DType::F32, &[b as i64, t as i64, e as i64], &["batch", "seq", "exp"]));
    let c = g.param(TensorType::named(DType::F32, &[b as i64, t as i64, e as i64], &["batch", "seq", "exp"]));
    let lb = SparseMoe::load_balance_loss(&l, &c);
    let p = Program::new("lb", g.finish(&[lb]));
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let dims = [b as i64, t as i64, e as i64];
    let got = rt.run(&p, &[HostTensor::from_f32(&logits, &dims), HostTensor::from_f32(&counts, &dims)]).unwrap()[0].to_f64()[0];
    assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "lb loss {got} vs reference {want}");
}

#[test]
fn train_adds_the_weighted_loss() {
    let out = std::env::temp_dir().join(format!("maxtext_lb_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let metrics = out.join("m.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args([
            "train",
            "configs/base.yml",
            "model_name=qwen3-next-tiny",
            "override_model_config=true",
            "vocab_size=1024",
            "run_name=lb",
            "dataset_type=synthetic",
            "per_device_batch_size=2",
            "max_target_length=32",
            "max_prefill_predict_length=32",
            "steps=2",
            "enable_checkpointing=false",
            "load_balance_loss_weight=0.01",
        ])
        .arg(format!("base_output_directory={}", out.display()))
        .arg(format!("metrics_file={}", metrics.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().lines().next().unwrap()).unwrap();
    let (loss, lm, lb) = (line["learning/loss"].as_f64().unwrap(), line["learning/lm_loss"].as_f64().unwrap(), line["learning/moe_lb_loss"].as_f64().unwrap());
    // A balanced router gives E²·Σ(k/E · 1/E)/E = k, so 0.01·k = 0.02 with top-2; random init is near that.
    assert!(lb > 0.005 && lb < 0.1, "moe_lb_loss {lb}");
    assert!((loss - lm - lb).abs() < 1e-5 * loss, "loss {loss} != lm_loss {lm} + moe_lb_loss {lb}");
    std::fs::remove_dir_all(&out).ok();
}
