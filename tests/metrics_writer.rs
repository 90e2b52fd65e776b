//! Training metrics: the metrics-file JSON lines, the TensorBoard event file (framing, checksums, scalars),
//! the console lines, a killed run, and MaxText's FLOPs count for Qwen3-Next-80B-A3B.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maxtext::config::Config;
use maxtext::metrics::tensorboard::{event, Event, FILE_VERSION};
use maxtext::metrics::*;
use prost::Message;

fn load(a: &[&str]) -> Config {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml");
    let args: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    Config::load_with_env(&base, &args, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn options(dir: &Path, console: Console) -> MetricsOptions {
    MetricsOptions {
        run_name: "metrics_test".into(),
        metrics_file: Some(dir.join("out/metrics.jsonl").into()),
        tensorboard_dir: Some(dir.join("tb").into()),
        log_period: 2,
        total_steps: 10,
        tflops_per_device: 91.9,
        tokens_per_device: 4096.0,
        peak_tflops_per_device: Some(459.0),
        is_moe: true,
        console,
        progress_bar: true,
    }
}

fn step(step: u64) -> StepMetrics {
    StepMetrics {
        step,
        loss: 10.0 - step as f64 * 0.5,
        grad_norm: 1.0 + step as f64,
        raw_grad_norm: 2.0 + step as f64,
        learning_rate: 1e-4 * (step + 1) as f64,
        step_time: Duration::from_millis(1000 + 100 * step),
        tokens: 4000 + step,
        extra: vec![],
    }
    .with(tags::MOE_LB_LOSS, 0.01 * step as f64)
    .with(tags::Z_LOSS, 1e-3)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "last line incomplete: {text:?}");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

const TRAIN_TAGS: &[&str] = &[
    tags::LOSS,
    tags::PERPLEXITY,
    tags::TOTAL_WEIGHTS,
    tags::GRAD_NORM,
    tags::RAW_GRAD_NORM,
    tags::MOE_LB_LOSS,
    tags::Z_LOSS,
    tags::STEP_TIME,
    tags::LEARNING_RATE,
    tags::TFLOPS,
    tags::TFLOPS_PER_SEC,
    tags::TOKENS,
    tags::TOKENS_PER_SEC,
    tags::MFU,
];

#[test]
fn jsonl_lines_carry_maxtext_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Off)).unwrap();
    for s in 0..5 {
        w.write(&step(s)).unwrap();
    }
    w.close().unwrap();
    let rows = lines(&dir.path().join("out/metrics.jsonl"));
    assert_eq!(rows.len(), 5);
    for (s, row) in rows.iter().enumerate() {
        let obj = row.as_object().unwrap();
        for tag in TRAIN_TAGS {
            assert!(obj[*tag].is_f64(), "step {s}: {tag} missing or not a number in {row}");
        }
        assert_eq!(obj.len(), TRAIN_TAGS.len() + 2, "{row}");
        assert_eq!(row["step"], serde_json::json!(s as f64));
        assert_eq!(row["run_name"], "metrics_test");
        let want = step(s as u64);
        assert_eq!(row[tags::LOSS], want.loss);
        assert_eq!(row[tags::GRAD_NORM], want.grad_norm);
        assert_eq!(row[tags::RAW_GRAD_NORM], want.raw_grad_norm);
        assert_eq!(row[tags::LEARNING_RATE], want.learning_rate);
        assert_eq!(row[tags::TOTAL_WEIGHTS], want.tokens as f64);
        let secs = want.step_time.as_secs_f64();
        assert_eq!(row[tags::STEP_TIME], secs);
        assert_eq!(row[tags::TFLOPS], 91.9);
        assert!((row[tags::TFLOPS_PER_SEC].as_f64().unwrap() - 91.9 / secs).abs() < 1e-9);
        assert!((row[tags::TOKENS_PER_SEC].as_f64().unwrap() - 4096.0 / secs).abs() < 1e-9);
        assert!((row[tags::MFU].as_f64().unwrap() - 91.9 / secs / 459.0).abs() < 1e-12);
        assert!((row[tags::PERPLEXITY].as_f64().unwrap() - want.loss.exp()).abs() < 1e-9);
    }
    // The raw text is MaxText's shape: tags first, then step and run_name, json.dumps separators.
    let first = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    let first = first.lines().next().unwrap();
    assert!(first.starts_with("{\"learning/loss\": 10.0, "), "{first}");
    assert!(first.ends_with(", \"step\": 0.0, \"run_name\": \"metrics_test\"}"), "{first}");
}

/// CRC-32C, bit by bit (reflected polynomial 0x82F63B78): independent of the `crc32c` crate.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// TFRecord's mask, written as the spec states it.
#[allow(clippy::manual_rotate)]
fn masked(data: &[u8]) -> u32 {
    let c = crc32c_bitwise(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// Splits a TFRecord file by hand, asserting both checksums of every record.
fn records_by_hand(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len_bytes = &bytes[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        assert_eq!(len_crc, masked(len_bytes), "length crc of the record at {pos}");
        let data = &bytes[pos + 12..pos + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[pos + 12 + len..pos + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked(data), "data crc of the record at {pos}");
        out.push(data.to_vec());
        pos += 16 + len;
    }
    assert_eq!(pos, bytes.len());
    out
}

#[test]
fn event_file_framing_checksums_and_scalars() {
    assert_eq!(crc32c_bitwise(b"123456789"), 0xe306_9283); // the CRC-32C check value
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Off)).unwrap();
    let path = w.event_file().unwrap().as_local().unwrap().to_path_buf();
    for s in 0..4 {
        w.write(&step(s)).unwrap();
    }
    w.close().unwrap();
    assert_eq!(event_files(&dir.path().join("tb")).unwrap(), vec![path.clone()]);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("events.out.tfevents."), "{name}");

    let records = records_by_hand(&std::fs::read(&path).unwrap());
    assert_eq!(records.len(), 1 + 4 * TRAIN_TAGS.len());
    let first = Event::decode(records[0].as_slice()).unwrap();
    assert_eq!(first.what, Some(event::What::FileVersion(FILE_VERSION.into())));
    assert!(first.wall_time > 1.6e9, "wall_time {}", first.wall_time);

    let scalars = read_scalars(&path).unwrap();
    assert_eq!(scalars.len(), 4 * TRAIN_TAGS.len());
    for s in 0..4u64 {
        let at: Vec<&ScalarEvent> = scalars.iter().filter(|e| e.step == s as i64).collect();
        let tags_here: Vec<&str> = at.iter().map(|e| e.tag.as_str()).collect();
        for tag in TRAIN_TAGS {
            assert!(tags_here.contains(tag), "step {s}: no {tag} in {tags_here:?}");
        }
        let value = |tag: &str| at.iter().find(|e| e.tag == tag).unwrap().value;
        let want = step(s);
        assert_eq!(value(tags::LOSS), want.loss as f32);
        assert_eq!(value(tags::GRAD_NORM), want.grad_norm as f32);
        assert_eq!(value(tags::LEARNING_RATE), want.learning_rate as f32);
        assert_eq!(value(tags::TOTAL_WEIGHTS), want.tokens as f32);
        assert_eq!(value(tags::MOE_LB_LOSS), (0.01 * s as f64) as f32);
        assert!(at.iter().all(|e| e.wall_time >= first.wall_time));
    }
}

#[test]
fn killed_run_keeps_every_completed_step() {
    const N: u64 = 7;
    let dir = tempfile::tempdir().unwrap();
    // Like SIGKILL: no destructor runs at all.
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Off)).unwrap();
    for s in 0..N {
        w.write(&step(s)).unwrap();
    }
    let event_file = w.event_file().unwrap().as_local().unwrap().to_path_buf();
    std::mem::forget(w);
    let rows = lines(&dir.path().join("out/metrics.jsonl"));
    assert_eq!(rows.len(), N as usize);
    for (s, row) in rows.iter().enumerate() {
        assert_eq!(row["step"], serde_json::json!(s as f64));
        assert!(row[tags::LOSS].is_f64());
    }
    let scalars = read_scalars(&event_file).unwrap();
    assert_eq!(scalars.len(), N as usize * TRAIN_TAGS.len());

    // Dropped without close (an error unwinding the loop), in a second run that resumes at step N: the
    // file is appended to, not truncated.
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Off)).unwrap();
    for s in N..N + 3 {
        w.write(&step(s)).unwrap();
    }
    drop(w);
    let rows = lines(&dir.path().join("out/metrics.jsonl"));
    assert_eq!(rows.len(), N as usize + 3);
    assert_eq!(rows.last().unwrap()["step"], serde_json::json!((N + 2) as f64));

    // A run that starts again at step 0 truncates the file, as MaxText does.
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Off)).unwrap();
    w.write(&step(0)).unwrap();
    w.close().unwrap();
    assert_eq!(lines(&dir.path().join("out/metrics.jsonl")).len(), 1);
}

#[test]
fn console_line_every_log_period_and_the_last_step() {
    let dir = tempfile::tempdir().unwrap();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Capture(captured.clone()))).unwrap();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        assert!(w.progress_hidden(), "stderr is not a terminal: the bar must be hidden");
    }
    for s in 0..5 {
        w.write(&step(s)).unwrap();
    }
    w.close().unwrap();
    let got = captured.lock().unwrap().clone();
    let steps: Vec<&str> = got.iter().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["completed step: 0", "completed step: 2", "completed step: 4"], "{got:#?}");
    assert_eq!(
        got[1],
        "completed step: 2, seconds: 1.200, TFLOP/s/device: 76.583, Tokens/s/device: 3413.333, total_weights: 4002, \
         loss: 9.000, lm_loss: 9.000, perplexity: 8103.084, moe_lb_loss: 0.020000"
    );

    // A last step off the period is printed by close().
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut w = MetricsWriter::with_options(options(dir.path(), Console::Capture(captured.clone()))).unwrap();
    for s in 0..4 {
        w.write(&step(s)).unwrap();
    }
    w.close().unwrap();
    assert!(captured.lock().unwrap().last().unwrap().starts_with("completed step: 3,"));
}

#[test]
fn options_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let metrics = dir.path().join("m/metrics.txt");
    let cfg = load(&[
        "run_name=r1",
        &format!("base_output_directory={out}"),
        &format!("metrics_file={}", metrics.display()),
        "model_name=qwen3-next-80b-a3b",
        "per_device_batch_size=2",
        "max_target_length=1024",
        "cpu_device_count=4",
        "log_period=5",
        "steps=20",
    ]);
    let opts = MetricsOptions::from_config(&cfg);
    assert_eq!(opts.tensorboard_dir, Some(PathBuf::from(&out).join("r1/tensorboard/r1").into()));
    assert_eq!(opts.metrics_file, Some(metrics.clone().into()));
    assert_eq!((opts.log_period, opts.total_steps, opts.is_moe), (5, 20, true));
    assert_eq!(opts.tokens_per_device, 2.0 * 1024.0);
    assert_eq!(opts.tflops_per_device, training_tflops_per_device(&cfg, 8, 1024, 4));
    assert_eq!(opts.peak_tflops_per_device, Some(CPU_NOMINAL_PEAK_TFLOPS));

    let mut w = MetricsWriter::new(&cfg).unwrap();
    w.write(&step(0)).unwrap();
    w.close().unwrap();
    assert_eq!(lines(&metrics)[0]["run_name"], "r1");
    let files = event_files(&dir.path().join("r1/tensorboard")).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(read_scalars(&files[0]).unwrap().len(), TRAIN_TAGS.len());

    let off = load(&["run_name=r2", &format!("base_output_directory={out}"), "enable_tensorboard=false"]);
    assert_eq!(MetricsOptions::from_config(&off).tensorboard_dir, None);
    assert_eq!(MetricsOptions::from_config(&off).metrics_file, None);
}

/// MaxText's FLOPs count on the real 80B config (per_device_batch_size=1, max_target_length=4096, as in
/// MaxText's `test_qwen3_next_flops`).
#[test]
fn flops_qwen3_next_80b() {
    let cfg =
        load(&["run_name=f", "model_name=qwen3-next-80b-a3b", "per_device_batch_size=1", "max_target_length=4096"]);
    let m = &cfg.model;
    let f = flops_per_token(m, 4096);

    // Active parameters as MaxText's test counts them: lm head + 12 full-attention layers + 36 GDN layers,
    // each with the router, the shared expert and 10 routed experts.
    let (e, v) = (2048.0, 151936.0);
    let moe = e * 512.0 + 3.0 * e * 512.0 * 1.0 + 3.0 * e * 512.0 * 10.0;
    let full_attn = e * (16.0 + 2.0 * 2.0) * 256.0 + 16.0 * 256.0 * e;
    let (kd, vd) = (16.0 * 128.0, 32.0 * 128.0);
    let gdn = e * (2.0 * kd + 2.0 * vd) + e * 2.0 * 32.0 + vd * e + (2.0 * kd + vd) * 4.0;
    let active = v * e + 12.0 * (full_attn + moe) + 36.0 * (gdn + moe);
    assert_eq!(f.active_params(), active);
    assert_eq!(active, 3_462_791_168.0);
    // ~3B active ("A3B"): 3.46e9 counting the 0.31e9 lm head; 6 × that is the weight part per token.
    assert!((3.0e9..4.0e9).contains(&f.active_params()));
    assert_eq!(3.0 * f.learnable_weight(), 6.0 * active);
    assert_eq!(3.0 * f.learnable_weight(), 20_776_747_008.0);

    // Attention: causal full attention 2·S·Hq·Dh per full layer; GDN core 8·Hv·Dk·Dv per GDN layer.
    assert_eq!(f.attention_core, 12.0 * 2.0 * 4096.0 * 16.0 * 256.0);
    assert_eq!(f.gdn_core, 36.0 * 8.0 * 32.0 * 128.0 * 128.0);
    assert_eq!(f.training(), 22_437_691_392.0);
    // MaxText's test checks this against a chunked-form GDN count within 5%.
    let chunked_attention = f.attention_core + 36.0 * flops::gdn_chunked_core_flops_per_token(m);
    let golden = 6.0 * active + 3.0 * chunked_attention;
    assert!((f.training() - golden).abs() / golden < 0.05, "{} vs {golden}", f.training());

    // Per device and step: 4096 tokens → 91.9 TFLOPs; linear in the batch.
    let one = training_tflops_per_device(&cfg, 1, 4096, 1);
    assert!((one - 22_437_691_392.0 * 4096.0 / 1e12).abs() < 1e-9, "{one}");
    for b in [2usize, 8, 256] {
        let t = training_tflops_per_device(&cfg, b, 4096, 1);
        assert!((t / one - b as f64).abs() < 1e-12, "batch {b}: {t} vs {one}");
    }
    assert_eq!(training_tflops_per_device(&cfg, 64, 4096, 64), one);
    assert_eq!(tokens_per_device(64, 4096, 64), 4096.0);

    // A longer sequence adds only the causal-attention term (quadratic in S overall).
    let long = flops_per_token(m, 8192);
    assert_eq!(long.learnable_weight(), f.learnable_weight());
    assert_eq!(long.attention_core, 2.0 * f.attention_core);
    assert_eq!(long.gdn_core, f.gdn_core);

    // MFU against the per-hardware peak: 91.9 TFLOPs in 0.5 s on a v5p is 40%.
    let peak = peak_tflops_per_device(&cfg, Some("TPU v5p"));
    assert_eq!(peak, 459.0);
    assert!((mfu(one / 0.5, peak) - 0.4004).abs() < 1e-3, "{}", mfu(one / 0.5, peak));
}
