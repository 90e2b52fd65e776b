//! Packed training equals per-document training: with segment ids, attention is masked per segment and —
//! unlike MaxText — the Gated DeltaNet conv and recurrent state restart at every segment, so the logits of
//! a document inside a packed row are those of the document alone. Uses a GDN chunk of 4 so segments
//! start mid-chunk and span chunk boundaries.

use maxtext::config::Config;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::model::{self, ForwardInputs};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::model_params;
use maxtext::runtime::{init_params, HostTensor, Runtime};
use std::path::Path;

const SEQ: i64 = 16;

fn config(scan: bool) -> Config {
    let o: Vec<String> = [
        "model_name=qwen3-next-tiny",
        "override_model_config=true",
        "vocab_size=64",
        "gdn_chunk_size=4",
        "dtype=float32",
        "weight_dtype=float32",
        "max_target_length=16",
        "max_prefill_predict_length=16",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("scan_layers={scan}")])
    .collect();
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

/// logits of `rows` (tokens, positions, segments) under random weights (seeded).
fn logits(cfg: &Config, rows: &[(Vec<i32>, Vec<i32>, Vec<i32>)]) -> Vec<f32> {
    let b = rows.len() as i64;
    let g = Graph::new();
    let t = |g: &Graph| g.param(TensorType::named(DType::S32, &[b, SEQ], &["batch", "seq"]));
    let (tokens, positions, segs) = (t(&g), t(&g), t(&g));
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: Some(segs) };
    let out = model::forward(&cfg.model, &mut pb, &inputs, cfg.compute.scan_layers);
    let program = Program::new("packed", g.finish(&[out]));
    let cat = |k: usize| -> Vec<i32> { rows.iter().flat_map(|r| [&r.0, &r.1, &r.2][k].clone()).collect() };
    let mut args = vec![HostTensor::from_i32(&cat(0), &[b, SEQ]), HostTensor::from_i32(&cat(1), &[b, SEQ]), HostTensor::from_i32(&cat(2), &[b, SEQ])];
    args.extend(init_params(&pb.decls, 3));
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    rt.run(&program, &args).unwrap()[0].to_f32()
}

/// One document alone in a row, right-padded.
fn alone(doc: &[i32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let n = doc.len();
    let mut t = doc.to_vec();
    t.resize(SEQ as usize, 0);
    let p: Vec<i32> = (0..SEQ as i32).map(|i| if (i as usize) < n { i } else { 0 }).collect();
    let s: Vec<i32> = (0..SEQ as usize).map(|i| i32::from(i < n)).collect();
    (t, p, s)
}

fn check(scan: bool) {
    let cfg = config(scan);
    let vocab = cfg.model.vocab_size;
    let docs: [Vec<i32>; 3] = [vec![5, 9, 13, 2, 40], vec![7, 7, 30, 31, 1, 63], vec![11, 12, 50]];
    // Packed: doc0 at 0..5, doc1 at 5..11 (crosses the chunk boundary at 8), doc2 at 11..14, then padding.
    let mut packed = (Vec::new(), Vec::new(), Vec::new());
    for (k, d) in docs.iter().enumerate() {
        packed.0.extend(d);
        packed.1.extend(0..d.len() as i32);
        packed.2.extend(std::iter::repeat(k as i32 + 1).take(d.len()));
    }
    for v in [&mut packed.0, &mut packed.1, &mut packed.2] {
        v.resize(SEQ as usize, 0);
    }
    let mut rows = vec![packed];
    rows.extend(docs.iter().map(|d| alone(d)));
    let l = logits(&cfg, &rows);
    let row = |r: usize, pos: usize| &l[(r * SEQ as usize + pos) * vocab..(r * SEQ as usize + pos + 1) * vocab];
    let mut offset = 0;
    for (k, d) in docs.iter().enumerate() {
        for p in 0..d.len() {
            let (a, b) = (row(0, offset + p), row(k + 1, p));
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 2e-5, "scan={scan}: document {k} position {p}: packed logits differ from the document alone by {diff}");
        }
        offset += d.len();
    }
}

#[test]
fn packed_rows_equal_documents_scanned() {
    check(true);
}

#[test]
fn packed_rows_equal_documents_unscanned() {
    check(false);
}
