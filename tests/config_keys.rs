//! The key table (`src/config/keys.rs`): every key of configs/base.yml has a rule, the README shows the
//! same table, every value that is not built is refused by name, and the keys built in this change show
//! their effect through the real binary: `jax_cache_dir` (a second run compiles nothing),
//! `compile_xla_flags` (XLA dumps where `--xla_dump_to` says), `return_log_prob` (HF's log-probabilities),
//! check-logits' `atol` / `rtol` / `skip_first_token`, and the refusals of `decoder_block` and
//! `tokenizer_type` defaults that are not built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use maxtext::config::keys::{markdown_table, Support, KEY_TABLE};
use maxtext::config::{Config, ConfigError};
use serde_yaml_ng::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn base_yml() -> PathBuf {
    root().join("configs/base.yml")
}

#[test]
fn every_base_yml_key_has_one_rule_in_base_yml_order() {
    let defaults = Config::defaults();
    let keys: Vec<&str> = defaults.keys().collect();
    let table: Vec<&str> = KEY_TABLE.iter().map(|r| r.key).collect();
    let missing: Vec<&&str> = keys.iter().filter(|k| !table.contains(k)).collect();
    let extra: Vec<&&str> = table.iter().filter(|k| !keys.contains(k)).collect();
    assert!(missing.is_empty(), "keys of configs/base.yml without a rule in src/config/keys.rs: {missing:?}");
    assert!(extra.is_empty(), "rules for keys that configs/base.yml does not have: {extra:?}");
    assert_eq!(keys, table, "the key table must follow configs/base.yml's order");
}

#[test]
fn readme_table_is_the_key_table() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (start, end) = ("<!-- keys:start -->\n", "<!-- keys:end -->");
    let from = readme.find(start).expect("README.md has no <!-- keys:start --> marker") + start.len();
    let to = readme.find(end).expect("README.md has no <!-- keys:end --> marker");
    let want = markdown_table();
    if readme[from..to] != want {
        panic!("README.md's key table is stale; replace the text between the markers with:\n{want}");
    }
}

/// A value of the same type as `default` that differs from it and from every value in `allowed`.
fn other_value(default: &Value, allowed: &[&str]) -> String {
    let candidates: Vec<String> = match default {
        Value::Bool(b) => vec![(!b).to_string()],
        Value::Number(n) if n.is_i64() => (3..10).map(|d| (n.as_i64().unwrap() + d).to_string()).collect(),
        Value::Number(n) => vec![(n.as_f64().unwrap() + 0.5).to_string()],
        Value::Null => vec!["3".into()],
        Value::Sequence(_) => vec!["[relu]".into()],
        _ => vec!["not_a_built_value".into()],
    };
    candidates.into_iter().find(|c| !allowed.iter().any(|a| a.eq_ignore_ascii_case(c))).expect("a value outside the list")
}

#[test]
fn every_value_that_is_not_built_is_refused_by_name() {
    let defaults = Config::defaults();
    let mut checked = 0;
    for rule in KEY_TABLE {
        let allowed: &[&str] = match rule.support {
            Support::Honoured => continue,
            Support::Only(values) => values,
            Support::DefaultOnly => &[],
        };
        let value = other_value(defaults.value(rule.key).unwrap(), allowed);
        let arg = format!("{}={value}", rule.key);
        match Config::load(&base_yml(), &[arg.clone()]) {
            Err(e @ ConfigError::NotBuilt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("`{}=", rule.key)) && msg.contains("not supported"), "{arg}: {msg}");
            }
            Err(e) => panic!("{arg}: refused, but not as a value that is not built: {e}"),
            Ok(_) => panic!("{arg} was accepted, but the key table says it is not built"),
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} refusals checked");
}

#[test]
fn every_listed_value_loads() {
    for rule in KEY_TABLE {
        let Support::Only(values) = rule.support else { continue };
        for v in values {
            let arg = format!("{}={v}", rule.key);
            if let Err(e @ ConfigError::NotBuilt { .. }) = Config::load(&base_yml(), &[arg.clone()]) {
                panic!("{arg} is listed as built but refused: {e}");
            }
        }
    }
}

/// Runs `maxtext <args>` with extra environment; returns (success, stdout, stderr).
fn maxtext(args: &[String], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .expect("running maxtext");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("maxtext_keys_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A one-step synthetic train run of the tiny model.
fn tiny_train(extra: &[String]) -> Vec<String> {
    let mut a = args(&[
        "train",
        "configs/base.yml",
        "model_name=qwen3-next-tiny",
        "dataset_type=synthetic",
        "steps=2",
        "per_device_batch_size=1",
        "max_target_length=16",
        "max_prefill_predict_length=8",
        "enable_checkpointing=false",
        "log_config=false",
        "run_name=keys",
    ]);
    a.extend(extra.iter().cloned());
    a
}

/// `compiled N programs, loaded M from jax_cache_dir ...` -> (N, M).
fn compile_counts(stderr: &str) -> (u64, u64) {
    let line = stderr.lines().find(|l| l.starts_with("compiled ")).unwrap_or_else(|| panic!("no compile summary in:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let loaded = line.split("loaded ").nth(1).and_then(|r| r.split_whitespace().next()).map_or(0, |n| n.parse().unwrap());
    (words[1].parse().unwrap(), loaded)
}

#[test]
fn a_second_run_with_jax_cache_dir_compiles_nothing() {
    let cache = tmp("cache");
    let out = tmp("out");
    let a = tiny_train(&[format!("jax_cache_dir={}", cache.display()), format!("base_output_directory={}", out.display())]);
    // Every compilation is stored (JAX's default stores only those of 1 s or more).
    let env = [("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")];
    let (ok, _, first) = maxtext(&a, &env);
    assert!(ok, "{first}");
    let (compiled, loaded) = compile_counts(&first);
    assert!(compiled >= 1 && loaded == 0, "first run: {compiled} compiled, {loaded} loaded\n{first}");
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert!(entries as u64 >= compiled, "{entries} cache entries for {compiled} compilations");
    let (ok, _, second) = maxtext(&a, &env);
    assert!(ok, "{second}");
    assert_eq!(compile_counts(&second), (0, compiled), "second run:\n{second}");
    // Without the cache the same command compiles again.
    let (ok, _, off) = maxtext(&tiny_train(&["jax_cache_dir=".into(), format!("base_output_directory={}", out.display())]), &env);
    assert!(ok, "{off}");
    assert!(off.contains("jax_cache_dir is off") && compile_counts(&off).0 >= 1, "{off}");
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn compile_xla_flags_reach_the_compiler() {
    let dump = tmp("dump");
    let out = tmp("flags_out");
    let flags = format!("compile_xla_flags=--xla_dump_to={} --xla_dump_hlo_as_text=true", dump.display());
    let (ok, _, err) = maxtext(&tiny_train(&[flags, "jax_cache_dir=".into(), format!("base_output_directory={}", out.display())]), &[]);
    assert!(ok, "{err}");
    let dumped = std::fs::read_dir(&dump).map(|d| d.count()).unwrap_or(0);
    assert!(dumped > 0, "--xla_dump_to={} left no files: the flag did not reach XLA\n{err}", dump.display());
    let (ok, _, err) = maxtext(&tiny_train(&["compile_xla_flags=--xla_no_such_flag_here=1".into(), "jax_cache_dir=".into()]), &[]);
    assert!(!ok && err.contains("xla_no_such_flag_here"), "an unknown XLA flag must fail naming it:\n{err}");
    let (ok, _, err) = maxtext(&tiny_train(&["compile_xla_flags=fast_math=1".into()]), &[]);
    assert!(!ok && err.contains("not an XLA flag"), "{err}");
    let _ = std::fs::remove_dir_all(&dump);
    let _ = std::fs::remove_dir_all(&out);
}

/// The HF tiny reference shipped in tests/fixtures.
fn hf_fixture() -> Option<PathBuf> {
    Some(common::shipped("hf/qwen3-next-tiny"))
}

/// Its golden logits as the JSONL `golden_logits_path` takes, written once per test binary.
fn golden_logits_jsonl(dir: &Path) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config_keys_golden_logits_{}.jsonl", std::process::id()));
    if !path.is_file() {
        common::write_golden_jsonl(&common::golden_lines(dir, "golden_logits"), &path);
    }
    path
}

#[test]
fn return_log_prob_gives_hf_log_probabilities() {
    let Some(dir) = hf_fixture() else { return };
    let golden = common::golden_lines(&dir, "golden_greedy").swap_remove(1);
    let prompt: Vec<i64> = serde_json::from_value(golden["tokens"].clone()).unwrap();
    let new_tokens: Vec<i64> = serde_json::from_value(golden["new_tokens"].clone()).unwrap();
    let step_logits: Vec<Vec<f64>> = serde_json::from_value(golden["step_logits"].clone()).unwrap();
    let out_path = tmp("decode.jsonl");
    let ids = prompt.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let (ok, stdout, err) = maxtext(
        &args(&[
            "decode",
            "configs/base.yml",
            &format!("hf_model_path={}", dir.display()),
            &format!("prompt_token_ids=[{ids}]"),
            "dtype=float32",
            "weight_dtype=float32",
            "per_device_batch_size=1",
            &format!("max_target_length={}", prompt.len() + new_tokens.len() + 1),
            &format!("max_prefill_predict_length={}", prompt.len()),
            "return_log_prob=true",
            &format!("decode_output_path={}", out_path.display()),
        ]),
        &[],
    );
    assert!(ok, "{stdout}{err}");
    assert!(stdout.contains("log_probs:"), "{stdout}");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&out_path).unwrap().lines().next().unwrap()).unwrap();
    let tokens: Vec<i64> = serde_json::from_value(line["generated_tokens"].clone()).unwrap();
    let log_probs: Vec<f64> = serde_json::from_value(line["log_probs"].clone()).unwrap();
    assert_eq!(tokens.len(), log_probs.len());
    for (i, (lp, row)) in log_probs.iter().zip(&step_logits).enumerate().take(tokens.len()) {
        assert_eq!(tokens[i], new_tokens[i], "greedy token {i}");
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let want = row[tokens[i] as usize] - lse;
        assert!((lp - want).abs() < 1e-4, "step {i}: log-prob {lp} vs HF {want}");
    }
    let _ = std::fs::remove_file(&out_path);
}

fn check_logits(extra: &[&str]) -> Option<(bool, String)> {
    let dir = hf_fixture()?;
    let mut a = args(&[
        "check-logits",
        "configs/base.yml",
        &format!("hf_model_path={}", dir.display()),
        &format!("golden_logits_path={}", golden_logits_jsonl(&dir).display()),
        "dtype=float32",
        "weight_dtype=float32",
    ]);
    a.extend(args(extra));
    let (ok, out, err) = maxtext(&a, &[]);
    Some((ok, format!("{out}{err}")))
}

#[test]
fn check_logits_atol_rtol_and_skip_first_token() {
    let Some((ok, out)) = check_logits(&["atol=1e-3", "rtol=0"]) else { return };
    assert!(ok && out.contains("PASS: every logit within atol"), "{out}");
    assert!(out.contains("top-1 141/141"), "{out}");
    // HF and we differ by ~1e-5 on raw logits: a bound far below that must fail, naming the count.
    let (ok, out) = check_logits(&["atol=1e-9", "rtol=0"]).unwrap();
    assert!(!ok && out.contains("logits differ by more than atol"), "{out}");
    // rtol alone widens the bound: 1e-9 + 1·|golden| passes every logit bigger than the error.
    let (ok, out) = check_logits(&["atol=1e-3", "rtol=1"]).unwrap();
    assert!(ok, "{out}");
    // skip_first_token leaves out position 0 of each of the 4 prompts.
    let (ok, out) = check_logits(&["skip_first_token=true"]).unwrap();
    assert!(ok && out.contains("top-1 137/137"), "{out}");
}

#[test]
fn defaults_that_are_not_built_are_refused_where_they_are_used() {
    // base.yml's own decoder_block is llama2: no command builds it.
    let (ok, out, err) = maxtext(&args(&["decode", "configs/base.yml", "prompt_token_ids=[1,2]", "log_config=false"]), &[]);
    assert!(!ok && err.contains("decoder_block=llama2 is not built"), "{out}{err}");
    // base.yml's tokenizer_type is sentencepiece; the Qwen3-Next model ymls set huggingface.
    let (ok, out, err) = maxtext(
        &args(&[
            "decode",
            "configs/base.yml",
            "model_name=qwen3-next-tiny",
            "override_model_config=true",
            "tokenizer_type=sentencepiece",
            "prompt=I love to",
            "per_device_batch_size=1",
            "max_target_length=8",
            "max_prefill_predict_length=4",
        ]),
        &[],
    );
    assert!(!ok && err.contains("tokenizer_type=sentencepiece is not built"), "{out}{err}");
}

#[test]
fn log_config_prints_every_key() {
    let (_, _, err) = maxtext(&args(&["decode", "configs/base.yml", "model_name=qwen3-next-tiny", "prompt_token_ids=[1,2]", "per_device_batch_size=1", "max_target_length=4", "max_prefill_predict_length=2"]), &[]);
    let printed = err.lines().filter(|l| l.starts_with("Config param ")).count();
    assert_eq!(printed, Config::defaults().len(), "{err}");
    assert!(err.contains("Config param decoder_block: qwen3_next"), "{err}");
    let (_, _, err) = maxtext(&args(&["decode", "configs/base.yml", "model_name=qwen3-next-tiny", "log_config=false", "prompt_token_ids=[1,2]", "per_device_batch_size=1", "max_target_length=4", "max_prefill_predict_length=2"]), &[]);
    assert!(!err.contains("Config param "), "{err}");
}

/// `mean KL` and `max |dlogit|` of check-logits' summary line.
fn summary_figures(out: &str) -> (f64, f64) {
    let line = out.lines().find(|l| l.starts_with("all ")).unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    let after = |tag: &str| line.split(tag).nth(1).unwrap().split_whitespace().next().unwrap().parse::<f64>().unwrap();
    (after("mean KL "), after("max |dlogit| "))
}

#[test]
fn float32_casts_change_bfloat16_logits() {
    let bf16 = ["dtype=bfloat16", "weight_dtype=float32", "max_kl_div=1"];
    let run = |extra: &[&str]| {
        let all: Vec<&str> = bf16.iter().chain(extra).copied().collect();
        let (ok, out) = check_logits(&all).unwrap();
        assert!(ok, "{extra:?}: {out}");
        summary_figures(&out)
    };
    if hf_fixture().is_none() {
        return;
    }
    let base = run(&[]);
    for key in ["float32_qk_product", "float32_logits", "float32_gate_logits", "logits_dot_in_fp32"] {
        let on = run(&[&format!("{key}=true")]);
        assert_ne!(on, base, "{key}=true left the bf16 logits unchanged: {on:?}");
    }
    // The casts move bf16 rounding around; with bf16 weights they do not bring the logits closer to HF's
    // f32 ones (measured: mean KL 0.0116 without, 0.0185 with all four), so only the change is asserted.
}

#[test]
fn rope_min_timescale_moves_the_logits() {
    // HF's RoPE is MaxText's with rope_min_timescale=1 (the default): 2 shifts every rotary frequency.
    let Some((ok, out)) = check_logits(&["rope_min_timescale=1"]) else { return };
    assert!(ok, "{out}");
    let (ok, out) = check_logits(&["rope_min_timescale=2", "max_kl_div=1e9"]).unwrap();
    assert!(ok, "{out}");
    let (mean_kl, _) = summary_figures(&out);
    assert!(mean_kl > 1e-6, "rope_min_timescale=2 should move the logits away from HF's: mean KL {mean_kl}\n{out}");
}
