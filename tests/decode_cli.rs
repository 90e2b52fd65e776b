//! `maxtext decode` end to end through the binary: the shipped Qwen3 tokenizer on random tiny weights,
//! token-id prompts on the HF fixture (greedy equals HF), batched prompts of different lengths,
//! `decode_output_path`, the stop at `max_target_length`, and prompt errors.

mod common;

use std::process::Command;

fn maxtext(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .arg("decode")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running maxtext");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> String {
    std::env::temp_dir().join(format!("maxtext_decode_{}_{name}", std::process::id())).display().to_string()
}

fn read_jsonl(path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn shipped_tokenizer_prints_text_from_random_tiny_weights() {
    let (ok, out, err) = maxtext(&[
        "model_name=qwen3-next-tiny",
        "tokenizer_path=assets/tokenizers/qwen3-tokenizer",
        "prompt=I love to",
        "per_device_batch_size=1",
        "max_target_length=12",
        "max_prefill_predict_length=8",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("I love to") && out.trim_end().len() > "I love to".len(), "{out}");
    assert!(err.contains("time to first token") && err.contains("tokens/s"), "{err}");
}

#[test]
fn token_prompts_on_the_hf_fixture_reproduce_hf_greedy() {
    let dir = common::shipped("hf/qwen3-next-tiny");
    let golden = common::golden_lines(&dir, "golden_greedy").swap_remove(1);
    let tokens: Vec<i64> = serde_json::from_value(golden["tokens"].clone()).unwrap();
    let want: Vec<i64> = serde_json::from_value(golden["new_tokens"].clone()).unwrap();
    let ids = tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let out_path = tmp("hf.jsonl");
    // 7 prompt tokens + 16 new ones fill max_target_length=23 exactly: the run stops there by itself.
    let (ok, out, err) = maxtext(&[
        &format!("hf_model_path={}", dir.display()),
        &format!("prompt_token_ids={ids}"),
        "per_device_batch_size=1",
        "dtype=float32",
        "weight_dtype=float32",
        "max_target_length=23",
        "max_prefill_predict_length=16",
        &format!("decode_output_path={out_path}"),
    ]);
    assert!(ok, "{out}{err}");
    let lines = read_jsonl(&out_path);
    std::fs::remove_file(&out_path).ok();
    assert_eq!(lines.len(), 1);
    let got: Vec<i64> = serde_json::from_value(lines[0]["generated_tokens"].clone()).unwrap();
    assert_eq!(got, want, "generated tokens vs HF greedy");
    assert_eq!(lines[0]["prompt_tokens"], serde_json::json!(tokens));
    assert!(lines[0]["text"].as_str().is_some());
}

#[test]
fn batched_prompts_of_different_lengths() {
    let out_path = tmp("batch.jsonl");
    let (ok, out, err) = maxtext(&[
        "model_name=qwen3-next-tiny",
        "tokenizer_path=assets/tokenizers/qwen3-tokenizer",
        "prompt=Hello;The quick brown fox jumps over",
        "per_device_batch_size=2",
        "max_target_length=16",
        "max_prefill_predict_length=8",
        &format!("decode_output_path={out_path}"),
    ]);
    assert!(ok, "{out}{err}");
    let lines = read_jsonl(&out_path);
    std::fs::remove_file(&out_path).ok();
    assert_eq!(lines.len(), 2);
    let (p0, p1) = (lines[0]["prompt_tokens"].as_array().unwrap().len(), lines[1]["prompt_tokens"].as_array().unwrap().len());
    assert!(p0 < p1, "{p0} vs {p1}");
    for (l, p) in lines.iter().zip([p0, p1]) {
        let g = l["generated_tokens"].as_array().unwrap().len();
        // Random weights rarely hit EOS: each row runs to max_target_length.
        assert!(g >= 1 && p + g <= 16, "prompt {p} + generated {g} > max_target_length 16");
    }
}

#[test]
fn prompt_errors_are_clear() {
    let (ok, _, err) = maxtext(&["model_name=qwen3-next-tiny", "prompt_token_ids=1,2,3,4,5,6,7,8,9", "per_device_batch_size=1", "max_prefill_predict_length=4", "max_target_length=16"]);
    assert!(!ok && err.contains("max_prefill_predict_length is 4"), "{err}");
    let (ok, _, err) = maxtext(&["model_name=qwen3-next-tiny", "prompt_token_ids=1,999999", "per_device_batch_size=1"]);
    assert!(!ok && err.contains("outside the vocabulary"), "{err}");
    let (ok, _, err) = maxtext(&["model_name=qwen3-next-tiny", "prompt_token_ids=1,2,3,4", "per_device_batch_size=1", "max_target_length=4", "max_prefill_predict_length=4"]);
    assert!(!ok && err.contains("no room to generate"), "{err}");
}
