//! maxtext's own commands timed as whole processes (the release binary, as a user runs it), one JSON line
//! per measurement on stdout and a readable table on stderr. `scripts/bench_vs_peers.sh` runs it next to
//! MaxText and HF transformers on the same machine and prints the ratios.
//!
//! Run: `cargo bench --bench commands` (about 2.5 minutes on these 2 cores). Parts, in this order:
//! - `peak`: the machine's matmul peak through the same CPU PJRT plugin, in this process: a 2048^3 dot in
//!   f32 and in bf16 (2 n^3 FLOPs each), compiled from the crate's own IR, inputs on the device, best of
//!   `CMD_BENCH_PEAK_REPS`. MFU below is against the f32 peak (every run here is f32), measured again at
//!   the end and the higher of the two used, so a quiet moment is not held against the model.
//! - `train`: `maxtext train` of qwen3-next-peer-tiny (1 x 128 tokens) and qwen3-next-peer-mid (1 x 512),
//!   synthetic data, f32, dot-product attention, `jax_cache_dir=` (cold compile): per-step wall = median of
//!   the `completed step: N, seconds: X` lines of steps >= 2, tokens/s, whole-process wall, the train step's
//!   compile time (`train step compiled in X s`), peak RSS (wait4's ru_maxrss of the child). FLOPs per step
//!   two ways: XLA's cost analysis of the compiled train program (`maxtext export-hlo program=train
//!   scan_layers=false`: XLA counts a while body once, so the layer loop is unrolled for the count; the
//!   Gated DeltaNet chunk loop inside a layer is still counted once, which makes it a slight undercount), and
//!   MaxText's formula (what `train` prints as TFLOP/s/device). Achieved FLOP/s = FLOPs / step time.
//! - `decode`: `maxtext decode` of qwen3-next-peer-mid (random weights, or `CMD_BENCH_HF_DIR` through
//!   `hf_model_path=`), a 128-token prompt `(7919 i + 17) mod vocab` as prompt_token_ids, caches of 256,
//!   greedy until the cache is full (128 new tokens), batch 1 and 8 (`per_device_batch_size=8`: the prompt
//!   fills every row, as MaxText fills the batch). Prefill tokens/s = rows x prompt / time to first token;
//!   decode tokens/s = rows x steps / (decode time less the wait for the first token), the definition of
//!   benches/decode_vs_hf.rs and scripts/bench_hf_decode.py.
//! - `wide`: the GPU kit's model (configs/models/qwen3-next-wide4-e64.yml, 4 layers at the real width, 64
//!   experts, bf16, 4 x 2048 tokens): export-hlo's compile time and FLOPs only, unless `maxtext devices
//!   hardware=gpu` finds a GPU plugin, in which case it also trains a few steps there.
//!
//! Environment: `MAXTEXT_BIN` (default target/release/maxtext), `CMD_BENCH_PARTS` (peak,train,decode,wide),
//! `CMD_BENCH_TINY_STEPS` (12), `CMD_BENCH_MID_STEPS` (5), `CMD_BENCH_REPEATS` (1 whole-process run of each
//! train / decode command; medians over them), `CMD_BENCH_DECODE_BATCHES` (1,8), `CMD_BENCH_HF_DIR`,
//! `CMD_BENCH_PEAK_N` (2048), `CMD_BENCH_PEAK_REPS` (5), `CMD_BENCH_LOG_DIR` (each child's output; default
//! .cache/bench/commands). The load average (/proc/loadavg) is recorded before each measurement: the
//! machine is shared, so only ratios taken within one run mean much.

use maxtext::config::Config;
use maxtext::emit::emit_program;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::metrics::training_tflops_per_device;
use maxtext::pjrt::{open_client, CompileOptions, Hardware};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn env_num(key: &str, default: usize) -> usize {
    env_or(key, &default.to_string()).parse().unwrap_or_else(|_| panic!("{key} must be a number"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// One finished child process: what it printed and the kernel's accounting of it.
struct Proc {
    rc: i32,
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    max_rss_mb: f64,
    out: String,
}

/// Runs `maxtext ARGS` from the repository root, its output kept in `log` (stdout, then stderr). The child
/// is reaped with wait4 so that its own peak RSS is read (getrusage(RUSAGE_CHILDREN) would be the largest
/// of all children so far).
fn run(bin: &Path, args: &[String], log: &Path) -> Proc {
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release, or set MAXTEXT_BIN)", bin.display()));
    // Both pipes drained on their own threads: a child blocked on a full pipe would never exit.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which std has not reaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall_s = t0.elapsed().as_secs_f64();
    assert!(pid > 0, "wait4 failed: {}", std::io::Error::last_os_error());
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    let _ = std::fs::write(log, format!("$ {} {}\n{text}", bin.display(), args.join(" ")));
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let rc = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    // ru_maxrss is in KiB on Linux.
    Proc { rc, wall_s, user_s: tv(ru.ru_utime), sys_s: tv(ru.ru_stime), max_rss_mb: ru.ru_maxrss as f64 / 1024.0, out: text }
}

/// The number after `key` in `line` (e.g. `seconds: ` -> 0.035).
fn num_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join(" | ")
}

struct Bench {
    bin: PathBuf,
    logs: PathBuf,
    scratch: tempfile::TempDir,
    repeats: usize,
    rows: Vec<Value>,
}

impl Bench {
    fn emit(&mut self, v: Value) {
        println!("{v}");
        self.rows.push(v);
    }

    fn config(&self, overrides: &[String]) -> Config {
        Config::load(&Path::new(ROOT).join("configs/base.yml"), overrides).expect("config")
    }

    /// `maxtext export-hlo program=train scan_layers=false` of the given keys: XLA's FLOPs and compile time.
    fn export_train(&self, name: &str, keys: &[String]) -> Value {
        let out = self.scratch.path().join(format!("export-{name}"));
        let mut args = vec!["export-hlo".to_string(), "configs/base.yml".into()];
        args.extend(keys.iter().cloned());
        args.extend(["program=train", "scan_layers=false", "jax_cache_dir=", "log_config=false"].map(String::from));
        args.push(format!("out_dir={}", out.display()));
        let load = loadavg();
        let p = run(&self.bin, &args, &self.logs.join(format!("export-{name}.log")));
        let stats: Option<Value> = std::fs::read_to_string(out.join("train.stats.json")).ok().and_then(|s| serde_json::from_str(&s).ok());
        match stats {
            Some(s) if p.rc == 0 => json!({
                "xla_flops": s["cost_analysis"]["flops"], "export_compile_s": s["compile_seconds"],
                "export_wall_s": p.wall_s, "export_max_rss_mb": p.max_rss_mb, "export_loadavg": load,
            }),
            _ => json!({"export_error": format!("export-hlo exited {}: {}", p.rc, last_lines(&p.out, 3))}),
        }
    }

    fn train(&mut self, model: &str, seq: usize, steps: usize) {
        let keys: Vec<String> = [
            format!("model_name={model}"),
            format!("max_target_length={seq}"),
            "per_device_batch_size=1".into(),
            "dataset_type=synthetic".into(),
            "dtype=float32".into(),
            "weight_dtype=float32".into(),
            "enable_checkpointing=false".into(),
            "attention=dot_product".into(),
        ]
        .into();
        let (mut step_s, mut compile_s, mut wall_s, mut rss, mut cpu_s, mut loads) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut losses, mut error) = (Vec::new(), None);
        for r in 0..self.repeats {
            let mut args = vec!["train".to_string(), "configs/base.yml".into()];
            args.extend(keys.iter().cloned());
            args.extend([format!("steps={steps}"), "log_period=1".into(), "jax_cache_dir=".into(), "log_config=false".into()]);
            args.push(format!("base_output_directory={}", self.scratch.path().display()));
            args.push(format!("run_name=train-{model}-{r}"));
            loads.push(loadavg());
            let p = run(&self.bin, &args, &self.logs.join(format!("train-{model}-{r}.log")));
            let steps_seen: Vec<(usize, f64, f64)> = p
                .out
                .lines()
                .filter(|l| l.starts_with("completed step: "))
                .filter_map(|l| Some((num_after(l, "completed step: ")? as usize, num_after(l, "seconds: ")?, num_after(l, "loss: ")?)))
                .collect();
            if p.rc != 0 || steps_seen.len() < 3 {
                error = Some(format!("train exited {} after {} steps: {}", p.rc, steps_seen.len(), last_lines(&p.out, 3)));
                break;
            }
            step_s.push(median(&steps_seen.iter().filter(|s| s.0 >= 2).map(|s| s.1).collect::<Vec<_>>()));
            losses = steps_seen.iter().map(|s| s.2).collect();
            compile_s.push(p.out.lines().find_map(|l| num_after(l, "train step compiled in ")).unwrap_or(f64::NAN));
            wall_s.push(p.wall_s);
            rss.push(p.max_rss_mb);
            cpu_s.push(p.user_s + p.sys_s);
        }
        let tokens = seq as f64; // batch 1
        let step = median(&step_s);
        let mut row = json!({
            "kind": "train", "model": model, "batch": 1, "seq": seq, "steps": steps, "repeats": self.repeats,
            "step_s": step, "step_s_runs": step_s, "tokens_per_s": tokens / step, "compile_s": median(&compile_s),
            "wall_s": median(&wall_s), "cpu_s": median(&cpu_s), "max_rss_mb": median(&rss), "losses": losses,
            "loadavg": loads, "cold_compile": true,
        });
        if let Some(e) = error {
            row["error"] = json!(e);
        }
        let cfg = self.config(&keys);
        row["maxtext_formula_flops"] = json!(training_tflops_per_device(&cfg, 1, seq, 1) * 1e12);
        let export = self.export_train(model, &keys);
        for (k, v) in export.as_object().unwrap() {
            row[k] = v.clone();
        }
        self.emit(row);
    }

    fn decode(&mut self, batch: usize, hf_dir: Option<&str>) {
        let (prompt, max_target) = (128usize, 256usize);
        let model_keys: Vec<String> = match hf_dir {
            Some(d) => vec![format!("hf_model_path={d}")],
            None => vec!["model_name=qwen3-next-peer-mid".into()],
        };
        let vocab = match hf_dir {
            Some(d) => {
                let c: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(d).join("config.json")).expect("config.json")).expect("config.json");
                c["vocab_size"].as_u64().expect("vocab_size") as usize
            }
            None => self.config(&model_keys).model.vocab_size,
        };
        let ids: Vec<String> = (0..prompt).map(|i| ((7919 * i + 17) % vocab).to_string()).collect();
        let mut args = vec!["decode".to_string(), "configs/base.yml".into()];
        args.extend(model_keys);
        args.extend([
            format!("prompt_token_ids={}", ids.join(",")),
            format!("per_device_batch_size={batch}"),
            format!("max_prefill_predict_length={prompt}"),
            format!("max_target_length={max_target}"),
            "dtype=float32".into(),
            "weight_dtype=float32".into(),
            "attention=dot_product".into(),
            "jax_cache_dir=".into(),
            "log_config=false".into(),
        ]);
        let (mut prefill, mut decode, mut step_ms, mut wall, mut rss, mut loads) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut error, mut generated) = (None, Value::Null);
        for r in 0..self.repeats {
            let out = self.logs.join(format!("decode-b{batch}-{r}.jsonl"));
            let mut a = args.clone();
            a.push(format!("decode_output_path={}", out.display()));
            loads.push(loadavg());
            let p = run(&self.bin, &a, &self.logs.join(format!("decode-b{batch}-{r}.log")));
            // "prefill X ms (R rows, ...), time to first token Y ms, decode S steps: T tokens/s (M new tokens)"
            let line = p.out.lines().find(|l| l.starts_with("prefill ") && l.contains("time to first token"));
            let parsed = line.and_then(|l| {
                Some((num_after(l, "prefill ")?, num_after(l, "time to first token ")?, num_after(l, "decode ")?, num_after(l, "steps: ")?))
            });
            let Some((prefill_ms, ttft_ms, steps, tok_s)) = parsed.filter(|_| p.rc == 0) else {
                error = Some(format!("decode exited {}: {}", p.rc, last_lines(&p.out, 3)));
                break;
            };
            // The command's decode time runs from the end of prefill, so it includes the wait for the first
            // token, which decode_vs_hf and the HF script count as prefill: taken out here.
            let decode_s = (steps * batch as f64 / tok_s) - (ttft_ms - prefill_ms) / 1e3;
            prefill.push((batch * prompt) as f64 / (ttft_ms / 1e3));
            decode.push(steps * batch as f64 / decode_s);
            step_ms.push(p.out.lines().find_map(|l| num_after(l, "decode step: ")).unwrap_or(f64::NAN));
            // Row 0's tokens, for a same-tokens check against another implementation on the same weights.
            let first: Option<Value> = std::fs::read_to_string(&out).ok().and_then(|t| t.lines().next().and_then(|l| serde_json::from_str(l).ok()));
            generated = first.map(|v| v["generated_tokens"].clone()).unwrap_or(Value::Null);
            wall.push(p.wall_s);
            rss.push(p.max_rss_mb);
        }
        let mut row = json!({
            "kind": "decode", "model": hf_dir.map(|d| format!("hf:{d}")).unwrap_or("qwen3-next-peer-mid".into()),
            "batch": batch, "prompt_len": prompt, "max_target_length": max_target, "new_tokens": max_target - prompt,
            "repeats": self.repeats, "prefill_tok_s": median(&prefill), "decode_tok_s": median(&decode),
            "decode_tok_s_runs": decode, "device_step_ms": median(&step_ms), "wall_s": median(&wall),
            "max_rss_mb": median(&rss), "loadavg": loads, "generated": generated,
        });
        if let Some(e) = error {
            row["error"] = json!(e);
        }
        self.emit(row);
    }

    fn wide(&mut self) {
        let keys: Vec<String> = ["model_name=qwen3-next-wide4-e64", "per_device_batch_size=4", "max_target_length=2048", "dtype=bfloat16"].map(String::from).into();
        let cfg = self.config(&keys);
        let mut row = json!({
            "kind": "wide", "model": "qwen3-next-wide4-e64", "batch": 4, "seq": 2048, "dtype": "bfloat16",
            "maxtext_formula_flops": training_tflops_per_device(&cfg, 4, 2048, 1) * 1e12, "loadavg": loadavg(),
        });
        for (k, v) in self.export_train("wide4-e64", &keys).as_object().unwrap() {
            row[k] = v.clone();
        }
        let probe = run(&self.bin, &["devices".into(), "hardware=gpu".into(), "log_config=false".into()], &self.logs.join("devices-gpu.log"));
        // The error's first clause ("PJRT plugin not found: no GPU plugin"), without the install advice.
        let no_gpu = probe.out.lines().find(|l| l.starts_with("error:")).map(|l| l.split(": install").next().unwrap_or(l).to_string());
        match no_gpu.or_else(|| (probe.rc != 0).then(|| format!("devices hardware=gpu exited {}", probe.rc))) {
            Some(why) => row["gpu_train"] = json!(format!("not run: {why}")),
            None => {
                let mut args = vec!["train".to_string(), "configs/base.yml".into(), "hardware=gpu".into()];
                args.extend(keys.iter().cloned());
                args.extend(["dataset_type=synthetic", "steps=8", "log_period=1", "enable_checkpointing=false", "log_config=false"].map(String::from));
                args.push(format!("base_output_directory={}", self.scratch.path().display()));
                let p = run(&self.bin, &args, &self.logs.join("train-wide4-gpu.log"));
                let s: Vec<f64> = p.out.lines().filter(|l| l.starts_with("completed step: ")).filter_map(|l| num_after(l, "seconds: ")).skip(2).collect();
                row["gpu_step_s"] = json!(median(&s));
                row["gpu_compile_s"] = json!(p.out.lines().find_map(|l| num_after(l, "train step compiled in ")));
                row["gpu_rc"] = json!(p.rc);
            }
        }
        self.emit(row);
    }
}

/// FLOP/s of an n x n x n dot in `dtype` on the CPU plugin: (best, median) over `reps` runs after one warm-up.
fn matmul_flops(n: i64, dtype: DType, reps: usize) -> (f64, f64) {
    let client = open_client(Hardware::Cpu, None, Some(1)).expect("CPU PJRT client");
    let g = Graph::new();
    let ty = TensorType::new(dtype, &[n, n]);
    let (a, b) = (g.param(ty.clone()), g.param(ty));
    let program = Program::new("matmul_peak", g.finish(&[a.matmul(&b)]));
    let exe = client.compile_mlir(&emit_program(&program), &CompileOptions::single_device()).expect("compile");
    let dev = &client.addressable_devices()[0];
    // Values in [-1, 1): no denormals or overflow to slow a kernel down.
    let host: Vec<f32> = (0..n * n).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
    let buf = || match dtype {
        DType::BF16 => client.buffer_from_bf16(&host.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>(), &[n, n], dev),
        _ => client.buffer_from_f32(&host, &[n, n], dev),
    }
    .expect("upload");
    let (x, y) = (buf(), buf());
    exe.execute(&[vec![&x, &y]]).expect("warm-up");
    let mut rates: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            exe.execute(&[vec![&x, &y]]).expect("execute"); // waits for completion
            2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (rates[rates.len() - 1], median(&rates))
}

fn table(rows: &[Value], peak: f64) {
    let g = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    eprintln!();
    eprintln!("== maxtext commands, whole processes (load average before each in the JSON) ==");
    for r in rows {
        match r["kind"].as_str().unwrap_or("") {
            "peak" => eprintln!(
                "matmul peak {} {}^3: {:.1} GFLOP/s best, {:.1} median (load {})",
                r["dtype"].as_str().unwrap_or(""),
                r["n"],
                g(&r["gflops_best"]),
                g(&r["gflops_median"]),
                r["loadavg"].as_str().unwrap_or("")
            ),
            "train" => {
                let step = g(&r["step_s"]);
                let (xla, formula) = (g(&r["xla_flops"]), g(&r["maxtext_formula_flops"]));
                eprintln!(
                    "train {:<22} {:>5} tok/step: step {:>8.1} ms, {:>8.1} tokens/s, compile {:>5.1} s, wall {:>6.1} s, peak RSS {:>6.0} MB{}",
                    r["model"].as_str().unwrap_or(""),
                    r["seq"],
                    step * 1e3,
                    g(&r["tokens_per_s"]),
                    g(&r["compile_s"]),
                    g(&r["wall_s"]),
                    g(&r["max_rss_mb"]),
                    r["error"].as_str().map(|e| format!("  ERROR {e}")).unwrap_or_default()
                );
                eprintln!(
                    "      FLOPs/step: XLA {:.3e} -> {:.2} GFLOP/s, MFU {:.1}% | MaxText formula {:.3e} -> {:.2} GFLOP/s, MFU {:.1}% (of {:.1} GFLOP/s f32); export-hlo compile {:.1} s",
                    xla,
                    xla / step / 1e9,
                    100.0 * xla / step / peak,
                    formula,
                    formula / step / 1e9,
                    100.0 * formula / step / peak,
                    peak / 1e9,
                    g(&r["export_compile_s"])
                );
            }
            "decode" => eprintln!(
                "decode {} batch {}: prefill {:.0} tok/s, decode {:.1} tok/s ({:.1} ms device step), wall {:.1} s, peak RSS {:.0} MB{}",
                r["model"].as_str().unwrap_or(""),
                r["batch"],
                g(&r["prefill_tok_s"]),
                g(&r["decode_tok_s"]),
                g(&r["device_step_ms"]),
                g(&r["wall_s"]),
                g(&r["max_rss_mb"]),
                r["error"].as_str().map(|e| format!("  ERROR {e}")).unwrap_or_default()
            ),
            "wide" => eprintln!(
                "wide4-e64 bf16 4x2048 (export-hlo only): compile {:.1} s, FLOPs/step XLA {:.3e}, MaxText formula {:.3e}; GPU: {}",
                g(&r["export_compile_s"]),
                g(&r["xla_flops"]),
                g(&r["maxtext_formula_flops"]),
                r["gpu_train"].as_str().map(String::from).unwrap_or_else(|| format!("{:.3} s/step", g(&r["gpu_step_s"])))
            ),
            _ => {}
        }
    }
}

fn main() {
    let bin = PathBuf::from(env_or("MAXTEXT_BIN", &format!("{ROOT}/target/release/maxtext")));
    assert!(bin.exists(), "{} not found: cargo build --release (or set MAXTEXT_BIN)", bin.display());
    let parts = env_or("CMD_BENCH_PARTS", "peak,train,decode,wide");
    let has = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let logs = PathBuf::from(env_or("CMD_BENCH_LOG_DIR", &format!("{ROOT}/.cache/bench/commands")));
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut b = Bench { bin, logs, scratch: tempfile::tempdir().expect("temp dir"), repeats: env_num("CMD_BENCH_REPEATS", 1).max(1), rows: vec![] };
    let (peak_n, peak_reps) = (env_num("CMD_BENCH_PEAK_N", 2048) as i64, env_num("CMD_BENCH_PEAK_REPS", 5).max(1));
    let mut peak_f32 = f64::NAN;
    let mut measure_peak = |b: &mut Bench, when: &str| {
        for dtype in [DType::F32, DType::BF16] {
            let load = loadavg();
            let (best, med) = matmul_flops(peak_n, dtype, peak_reps);
            if dtype == DType::F32 {
                peak_f32 = if peak_f32.is_nan() { best } else { peak_f32.max(best) };
            }
            let name = if dtype == DType::F32 { "f32" } else { "bf16" };
            b.emit(json!({"kind": "peak", "when": when, "dtype": name, "n": peak_n, "reps": peak_reps,
                          "gflops_best": best / 1e9, "gflops_median": med / 1e9, "loadavg": load}));
        }
    };
    if has("peak") {
        measure_peak(&mut b, "start");
    }
    if has("train") {
        b.train("qwen3-next-peer-tiny", 128, env_num("CMD_BENCH_TINY_STEPS", 12).max(3));
        b.train("qwen3-next-peer-mid", 512, env_num("CMD_BENCH_MID_STEPS", 5).max(3));
    }
    if has("decode") {
        let hf = std::env::var("CMD_BENCH_HF_DIR").ok().filter(|s| !s.is_empty());
        for batch in env_or("CMD_BENCH_DECODE_BATCHES", "1,8").split(',') {
            b.decode(batch.trim().parse().expect("CMD_BENCH_DECODE_BATCHES"), hf.as_deref());
        }
    }
    if has("wide") {
        b.wide();
    }
    if has("peak") {
        measure_peak(&mut b, "end");
    }
    // MFU against the higher of the two f32 peaks (the less disturbed measurement).
    let rows = std::mem::take(&mut b.rows);
    for r in rows.iter().filter(|r| r["kind"] == "train" && peak_f32.is_finite()) {
        let step = r["step_s"].as_f64().unwrap_or(f64::NAN);
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN) / step;
        println!(
            "{}",
            json!({"kind": "mfu", "model": r["model"], "peak_f32_gflops": peak_f32 / 1e9,
                   "achieved_gflops_xla": f("xla_flops") / 1e9, "mfu_xla": f("xla_flops") / peak_f32,
                   "achieved_gflops_formula": f("maxtext_formula_flops") / 1e9, "mfu_formula": f("maxtext_formula_flops") / peak_f32})
        );
    }
    table(&rows, peak_f32);
}
