//! The real lm-eval client (PyPI `lm-eval`, `local-completions` with the remote tokenizer, in the venv of
//! scripts/setup_lmeval_venv.sh) scores MMLU subjects against `maxtext serve` on the tiny model (random
//! weights, real Qwen3 vocabulary), over the local MMLU JSONL (task YAMLs from scripts/make_mmlu_tasks.py);
//! its per-subject accuracy, and every per-choice log-likelihood, must equal `maxtext eval mmlu` on the same
//! questions; chat completions (plain and streamed) on the same server. If the venv cannot be installed, the test FAILS saying so (it never passes silently).

mod serve_common;

use serde_json::Value;
use serve_common::Server;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SUBJECTS: [&str; 3] = ["abstract_algebra", "global_facts", "us_foreign_policy"];
const LIMIT: usize = 5;
const MODEL: [&str; 4] = ["model_name=qwen3-next-tiny", "per_device_batch_size=4", "max_target_length=264", "max_prefill_predict_length=256"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lmeval_python() -> PathBuf {
    let out = Command::new("bash").arg(root().join("scripts/setup_lmeval_venv.sh")).output().expect("running scripts/setup_lmeval_venv.sh");
    if !out.status.success() {
        panic!(
            "LM-EVAL VENV COULD NOT BE INSTALLED (scripts/setup_lmeval_venv.sh failed); this test needs PyPI access:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim())
}

fn find_files(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            find_files(&p, prefix, out);
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
            out.push(p);
        }
    }
}

#[test]
fn lm_eval_mmlu_through_the_server_equals_maxtext_eval() {
    // The subjects shipped in the repository (the test's three).
    let mmlu = root().join("assets/mmlu");
    let python = lmeval_python();
    let tmp = tempfile::tempdir().unwrap();
    let tasks = tmp.path().join("tasks");
    let st = Command::new(&python).arg(root().join("scripts/make_mmlu_tasks.py")).arg(&mmlu).arg(&tasks).status().unwrap();
    assert!(st.success(), "make_mmlu_tasks.py failed");

    // 1. maxtext eval mmlu on the same questions.
    let ours_path = tmp.path().join("ours.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(["eval", "mmlu"])
        .args(MODEL)
        .arg(format!("subjects={}", SUBJECTS.join(",")))
        .arg(format!("limit={LIMIT}"))
        .arg(format!("mmlu_path={}", mmlu.display()))
        .arg(format!("mmlu_output={}", ours_path.display()))
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "maxtext eval mmlu failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let ours: Vec<Value> = std::fs::read_to_string(&ours_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut our_acc: BTreeMap<String, f64> = BTreeMap::new();
    for s in SUBJECTS {
        let rows: Vec<&Value> = ours.iter().filter(|r| r["subject"] == s).collect();
        assert_eq!(rows.len(), LIMIT);
        our_acc.insert(s.into(), rows.iter().filter(|r| r["predicted"] == r["answer"]).count() as f64 / LIMIT as f64);
    }

    // 2. lm-eval against maxtext serve.
    let server = Server::start(env!("CARGO_BIN_EXE_maxtext"), &MODEL);
    let results = tmp.path().join("results");
    let task_list = SUBJECTS.iter().map(|s| format!("mmlu_local_{s}")).collect::<Vec<_>>().join(",");
    let out = Command::new(&python)
        .args(["-m", "lm_eval", "--model", "local-completions", "--model_args"])
        .arg(format!("model=qwen3-next-tiny,base_url=http://{}/v1/completions,tokenizer_backend=remote,max_length=257,num_concurrent=2", server.addr))
        .args(["--tasks", &task_list, "--include_path"])
        .arg(&tasks)
        .args(["--batch_size", "4", "--limit", &LIMIT.to_string(), "--log_samples", "--output_path"])
        .arg(&results)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lm_eval failed:\n{log}\nserver:\n{}", server.log());
    let mut files = Vec::new();
    find_files(&results, "results_", &mut files);
    let res: Value = serde_json::from_str(&std::fs::read_to_string(files.first().unwrap_or_else(|| panic!("no results file:\n{log}"))).unwrap()).unwrap();
    for s in SUBJECTS {
        let acc = res["results"][format!("mmlu_local_{s}")]["acc,none"].as_f64().unwrap_or_else(|| panic!("no acc for {s} in {res}"));
        eprintln!("{s}: lm-eval acc {acc:.4}, maxtext eval {:.4}", our_acc[s]);
        assert!((acc - our_acc[s]).abs() < 1e-9, "{s}: lm-eval {acc} != maxtext eval mmlu {}", our_acc[s]);
    }

    // 3. Per choice: lm-eval's log-likelihoods (sum of echoed prompt logprobs) equal ours.
    let mut samples = Vec::new();
    find_files(&results, "samples_", &mut samples);
    let mut checked = 0;
    for f in samples {
        let subject = SUBJECTS.iter().find(|s| f.to_string_lossy().contains(&format!("mmlu_local_{s}_"))).expect("samples of a known task");
        let rows: Vec<&Value> = ours.iter().filter(|r| r["subject"] == *subject).collect();
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let i = v["doc_id"].as_u64().unwrap() as usize;
            let theirs: Vec<f64> = v["resps"].as_array().unwrap().iter().map(|r| r[0][0].as_str().map(|s| s.parse().unwrap()).or_else(|| r[0][0].as_f64()).unwrap()).collect();
            let mine: Vec<f64> = serde_json::from_value(rows[i]["loglikelihoods"].clone()).unwrap();
            for (a, b) in theirs.iter().zip(&mine) {
                assert!((a - b).abs() < 1e-4, "{subject} doc {i}: lm-eval {theirs:?} vs ours {mine:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, SUBJECTS.len() * LIMIT, "every question's log-likelihoods compared");

    // 4. Chat on the same server (Qwen3 template, full vocabulary): plain and streamed agree.
    let chat = serde_json::json!({"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2});
    let (st, v) = server.post_json("/v1/chat/completions", &chat);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["choices"][0]["logprobs"]["content"][0]["top_logprobs"].as_array().unwrap().len(), 2);
    let mut streamed_req = chat.clone();
    streamed_req["stream"] = serde_json::json!(true);
    let (st, text) = server.post("/v1/chat/completions", &streamed_req.to_string());
    assert_eq!(st, 200);
    let data = serve_common::sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(streamed, v["choices"][0]["message"]["content"].as_str().unwrap());
}
