//! Random init as a program: values are a pure function of (seed, parameter path, element index), so the
//! same on 1 and on 8 devices (fsdp=8, each computing its shard) and across runs; a different seed gives
//! different values; each `Init` draws its distribution (truncated normal moments and range, uniform
//! range and mean, log-uniform range); the hash matches its host mirror.

use std::path::Path;
use std::sync::OnceLock;

use maxtext::config::Config;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::nn::{Init, ParamDecl};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{erfinv, init_key, init_program, param_decls, splitmix};
use maxtext::runtime::{for_each_shard, HostTensor, LocalPartitions, RunError, Runtime};

fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(open_client(Hardware::Cpu, None, Some(8)).unwrap()))
}

fn cfg(devices: usize) -> Config {
    let args: Vec<String> = format!("model_name=qwen3-next-tiny override_model_config=true vocab_size=1024 cpu_device_count={devices} ici_fsdp_parallelism=-1")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml"), &args).unwrap()
}

/// Every parameter, whole, after running the init program on the config's devices.
fn init_whole(cfg: &Config, seed: u64) -> (Vec<ParamDecl>, Vec<HostTensor>) {
    let decls = param_decls(cfg);
    let program = init_program(cfg, &decls, seed).unwrap();
    let (_, outs) = rt().run_on_device(&program).unwrap();
    let whole = (0..decls.len())
        .map(|r| {
            let spec = Runtime::result_spec(&program, r);
            let bufs: Vec<_> = outs.iter().map(|d| &d[r]).collect();
            let mut data = vec![0u8; spec.dims.iter().product::<i64>() as usize * spec.dtype.size_bytes()];
            let mut shards = 0;
            for_each_shard(&bufs, &LocalPartitions::all(bufs.len()), spec, |o, d, bytes| -> Result<(), RunError> {
                maxtext::sharding::place_region(&mut data, spec.dims, &bytes, o, d, spec.dtype.size_bytes());
                shards += 1;
                Ok(())
            })
            .unwrap();
            if cfg.run.cpu_device_count == 8 && decls[r].path == "token_embedder/embedding" {
                assert_eq!(shards, 8, "the embedding is split over fsdp=8");
            }
            HostTensor::from_bytes(spec.dtype, spec.dims, data)
        })
        .collect();
    (decls, whole)
}

#[test]
fn same_values_on_1_and_8_devices_and_across_runs() {
    let (decls, one) = init_whole(&cfg(1), 7);
    let (_, eight) = init_whole(&cfg(8), 7);
    let (_, again) = init_whole(&cfg(1), 7);
    let (_, other) = init_whole(&cfg(1), 8);
    for (i, d) in decls.iter().enumerate() {
        assert!(one[i] == eight[i], "{}: 1 device and 8 devices differ", d.path);
        assert!(one[i] == again[i], "{}: not deterministic", d.path);
        if !matches!(d.init, Init::Zeros | Init::Ones) {
            assert!(one[i] != other[i], "{}: another seed gives the same values", d.path);
        }
    }
}

#[test]
fn distributions_follow_the_declarations() {
    let (decls, params) = init_whole(&cfg(1), 0);
    let mut seen = [false; 4];
    for (d, t) in decls.iter().zip(&params) {
        let v: Vec<f64> = t.to_f64();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        match d.init {
            Init::Zeros => assert!(v.iter().all(|x| *x == 0.0), "{}", d.path),
            Init::Ones => assert!(v.iter().all(|x| *x == 1.0), "{}", d.path),
            Init::Normal { stddev } if n >= 4096.0 => {
                seen[0] = true;
                // A standard normal truncated to [-2, 2] has standard deviation 0.8796.
                let want = 0.879_626 * stddev;
                let tol = 4.0 * want / n.sqrt() + 0.01 * want;
                assert!((std - want).abs() < tol, "{}: std {std} vs {want} (n {n})", d.path);
                assert!(mean.abs() < 4.0 * want / n.sqrt() + 1e-3 * want, "{}: mean {mean}", d.path);
                assert!(lo >= -2.0 * stddev * 1.01 && hi <= 2.0 * stddev * 1.01, "{}: range [{lo}, {hi}] for stddev {stddev}", d.path);
                assert!(hi > 1.8 * stddev && lo < -1.8 * stddev, "{}: range [{lo}, {hi}] should reach near ±2σ", d.path);
            }
            Init::Uniform { lo: a, hi: b } => {
                seen[1] = true;
                assert!(lo >= a - 1e-6 && hi <= b + 1e-6, "{}: [{lo}, {hi}] outside [{a}, {b})", d.path);
                assert!((mean - (a + b) / 2.0).abs() < (b - a) * (0.3 / n.sqrt() + 0.01), "{}: mean {mean}", d.path);
            }
            Init::LogUniform { lo: a, hi: b } => {
                seen[2] = true;
                assert!(lo >= a.ln() - 1e-3 && hi <= b.ln() + 1e-3, "{}: [{lo}, {hi}] outside log [{a}, {b})", d.path);
            }
            _ => {}
        }
        if t.dtype != DType::F32 {
            seen[3] = true;
        }
    }
    assert!(seen[0] && seen[2], "the tiny model has truncated-normal and log-uniform parameters: {seen:?}");
}

/// The traced hash is SplitMix64 of (key, index): the uniform draws equal their host mirror.
#[test]
fn hash_matches_its_host_mirror_and_erfinv_is_accurate() {
    let decl = ParamDecl {
        path: "probe/u".into(),
        dims: vec![3, 5],
        axes: vec!["a", "b"],
        logical: vec![None, None],
        dtype: DType::F32,
        init: Init::Uniform { lo: 0.0, hi: 1.0 },
        scan_axes: 0,
        shard_move: None,
    };
    let c = cfg(1);
    let program = init_program(&c, std::slice::from_ref(&decl), 42).unwrap();
    let got = rt().run(&program, &[]).unwrap()[0].to_f32();
    let key = init_key(42, "probe/u");
    for (i, g) in got.iter().enumerate() {
        let want = (splitmix(key, i as u64) >> 40) as f32 / (1u32 << 24) as f32;
        assert_eq!(*g, want, "element {i}");
    }
    // erfinv against known values (Giles' approximation is accurate to a few f32 ulps).
    let xs = [0.0f32, 0.5, -0.3, 0.9, 0.99, 0.954_499_7, -0.999];
    let want = [0.0, 0.476_936_28, -0.272_462_71, 1.163_087_2, 1.821_386_4, 1.414_213_6, -2.326_753_8];
    let g = Graph::new();
    let x = g.param(TensorType::new(DType::F32, &[xs.len() as i64]));
    let f = g.finish(&[erfinv(&x)]);
    let out = rt().run(&Program::new("erfinv", f), &[HostTensor::from_f32(&xs, &[xs.len() as i64])]).unwrap()[0].to_f32();
    for ((x, o), w) in xs.iter().zip(&out).zip(want) {
        assert!((o - w).abs() <= 2e-6 * w.abs().max(1.0), "erfinv({x}) = {o}, want {w}");
    }
}
