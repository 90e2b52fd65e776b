//! The PJRT runtime on the real XLA CPU plugin, found through discovery (fetched with pip on a fresh
//! machine). Each program is tiny; the whole file runs in a few seconds.

use std::path::Path;
use std::sync::Arc;

use half::bf16;
use maxtext::compile::ExecutableCache;
use maxtext::ir::DType;
use maxtext::pjrt::{open_client, Buffer, Client, CompileOptions, Error, Hardware, Plugin, Value};

fn client(devices: i64) -> Client {
    open_client(Hardware::Cpu, None, Some(devices)).expect("CPU PJRT client")
}

/// Deterministic test data in [-1, 1), multiples of 1/8 (exact in bf16).
fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7 + seed * 13) % 16) as f32 - 8.0) / 8.0).collect()
}

/// Row-major `a[m,k] @ b[k,n]` accumulated in f64.
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|l| a[i * k + l] as f64 * b[l * n + j] as f64).sum::<f64>() as f32;
        }
    }
    c
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

const MATMUL_F32: &str = r#"
module @matmul_reduce {
  func.func public @main(%a: tensor<4x8xf32>, %b: tensor<8x16xf32>) -> (tensor<4x16xf32>, tensor<4xf32>) {
    %c = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %s = stablehlo.reduce(%c init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<4x16xf32>, tensor<f32>) -> tensor<4xf32>
    return %c, %s : tensor<4x16xf32>, tensor<4xf32>
  }
}
"#;

const MATMUL_BF16: &str = r#"
module @matmul_reduce_bf16 {
  func.func public @main(%a: tensor<4x8xbf16>, %b: tensor<8x16xbf16>) -> (tensor<4x16xbf16>, tensor<4xf32>) {
    %c = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<4x8xbf16>, tensor<8x16xbf16>) -> tensor<4x16xbf16>
    %c32 = stablehlo.convert %c : (tensor<4x16xbf16>) -> tensor<4x16xf32>
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %s = stablehlo.reduce(%c32 init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<4x16xf32>, tensor<f32>) -> tensor<4xf32>
    return %c, %s : tensor<4x16xbf16>, tensor<4xf32>
  }
}
"#;

/// `a[8x16] @ b[16x8]` with the contracting dim sharded 4 ways (Shardy): output 0 replicated,
/// output 1 (`2 * a @ b`) sharded by rows.
const SPMD_SDY: &str = r#"
module @spmd_sdy attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["x"=4]>
  func.func public @main(%a: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {"x"}]>},
                         %b: tensor<16x8xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>})
      -> (tensor<8x8xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {}]>},
          tensor<8x8xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>}) {
    %c = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<8x8xf32>
    %d = stablehlo.add %c, %c : tensor<8x8xf32>
    return %c, %d : tensor<8x8xf32>, tensor<8x8xf32>
  }
}
"#;

const DONATE: &str = r#"
module @donate {
  func.func public @main(%x: tensor<16x8xf32> {tf.aliasing_output = 0 : i32}, %y: tensor<16x8xf32>) -> tensor<16x8xf32> {
    %r = stablehlo.add %x, %y : tensor<16x8xf32>
    return %r : tensor<16x8xf32>
  }
}
"#;

#[test]
fn clients_with_1_4_8_devices() {
    for n in [1i64, 4, 8] {
        let c = client(n);
        assert_eq!(c.platform_name(), "cpu");
        assert_eq!(c.process_index().unwrap(), 0);
        assert_eq!(c.devices().len(), n as usize);
        assert_eq!(c.addressable_devices().len(), n as usize);
        for (i, d) in c.devices().iter().enumerate() {
            assert_eq!(d.id(), i as i32);
            assert_eq!(d.kind(), "cpu");
            assert_eq!(d.process_index(), 0);
            assert_eq!(d.jax_name(), format!("CpuDevice(id={i})"));
            assert!(!d.debug_string().is_empty());
        }
        let text = c.describe();
        assert!(text.contains("platform: cpu") && text.contains("PJRT API 0.") && text.contains("CpuDevice(id=0)"), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("CpuDevice(")).count(), n as usize, "{text}");
    }
    let c = client(2);
    let plugin = c.plugin();
    assert_eq!(plugin.api_version().major, 0);
    let attrs = plugin.attributes().unwrap();
    assert!(matches!(attrs.get("stablehlo_current_version"), Some(Value::Int64List(v)) if v.len() == 3), "{attrs:?}");
    // Loading again gives the same plugin.
    assert!(Arc::ptr_eq(plugin, &Plugin::load(plugin.path()).unwrap()));
    assert!(client(1).id() != c.id());
}

#[test]
fn cpu_device_count_below_one_is_rejected() {
    let err = open_client(Hardware::Cpu, None, Some(0)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn matmul_reduce_f32_matches_host() {
    let c = client(1);
    let dev = &c.addressable_devices()[0];
    let exe = c.compile_mlir(MATMUL_F32, &CompileOptions::single_device()).unwrap();
    assert_eq!(exe.num_outputs(), 2);
    assert_eq!(exe.output_dims().unwrap(), vec![vec![4, 16], vec![4]]);
    assert_eq!(exe.output_dtypes().unwrap(), vec![DType::F32, DType::F32]);
    assert_eq!(exe.addressable_devices().len(), 1);

    let (a, b) = (data(32, 1), data(128, 2));
    let ab = c.buffer_from_f32(&a, &[4, 8], dev).unwrap();
    let bb = c.buffer_from_f32(&b, &[8, 16], dev).unwrap();
    assert_eq!(ab.dims().unwrap(), vec![4, 8]);
    assert_eq!(ab.dtype().unwrap(), DType::F32);
    assert_eq!(ab.device().unwrap(), *dev);
    assert!(ab.on_device_size().unwrap() >= 128);
    assert_eq!(ab.to_vec::<f32>().unwrap(), a);

    let out = exe.execute(&[vec![&ab, &bb]]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 2);
    let want_c = matmul(&a, &b, 4, 8, 16);
    let want_s: Vec<f32> = want_c.chunks(16).map(|r| r.iter().sum()).collect();
    assert_close(&out[0][0].to_vec::<f32>().unwrap(), &want_c, 1e-6, "c");
    assert_close(&out[0][1].to_vec::<f32>().unwrap(), &want_s, 1e-6, "s");
    assert_eq!(out[0][1].dims().unwrap(), vec![4]);
    assert!(out[0][0].to_vec::<i32>().is_err(), "dtype mismatch must be an error");

    let hlo = exe.optimized_hlo_text().unwrap();
    assert!(hlo.contains("HloModule") && hlo.contains("ENTRY %") && hlo.contains("dot"), "{hlo}");
    assert!(hlo.contains("f32[4,8]"), "{hlo}");
    let stats = exe.memory_stats().unwrap();
    assert_eq!(stats.argument_size_in_bytes, 4 * (32 + 128));
    let cost = exe.cost_analysis().unwrap();
    assert!(cost.get("flops").copied().unwrap_or(0.0) >= (2 * 4 * 8 * 16) as f64, "{cost:?}");
    assert!(!exe.fingerprint().unwrap().is_empty());
}

#[test]
fn matmul_reduce_bf16_matches_host() {
    let c = client(1);
    let dev = &c.addressable_devices()[0];
    let exe = c.compile_mlir(MATMUL_BF16, &CompileOptions::default()).unwrap();
    assert_eq!(exe.output_dtypes().unwrap(), vec![DType::BF16, DType::F32]);
    let (a, b) = (data(32, 3), data(128, 4));
    let a16: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let b16: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let ab = c.buffer_from_bf16(&a16, &[4, 8], dev).unwrap();
    let bb = c.buffer_from_bf16(&b16, &[8, 16], dev).unwrap();
    assert_eq!(ab.dtype().unwrap(), DType::BF16);
    let out = exe.execute(&[vec![&ab, &bb]]).unwrap();
    let got_c: Vec<f32> = out[0][0].to_vec::<bf16>().unwrap().iter().map(|x| x.to_f32()).collect();
    let want_c = matmul(&a, &b, 4, 8, 16);
    assert_close(&got_c, &want_c, 1e-2, "c (bf16)");
    let want_s: Vec<f32> = got_c.chunks(16).map(|r| r.iter().sum()).collect();
    assert_close(&out[0][1].to_vec::<f32>().unwrap(), &want_s, 1e-5, "s");
}

#[test]
fn spmd_shardy_on_4_devices_gives_correct_shards() {
    let c = client(4);
    let exe = c.compile_mlir(SPMD_SDY, &CompileOptions::spmd(4)).unwrap();
    let devices = exe.addressable_devices().to_vec();
    assert_eq!(devices.len(), 4);
    assert_eq!(exe.output_dims().unwrap(), vec![vec![8, 8], vec![2, 8]]);
    let (a, b) = (data(8 * 16, 5), data(16 * 8, 6));
    // Partition p holds columns 4p..4p+4 of a and rows 4p..4p+4 of b.
    let mut bufs: Vec<[Buffer; 2]> = Vec::new();
    for (p, dev) in devices.iter().enumerate() {
        let a_p: Vec<f32> = (0..8).flat_map(|r| a[r * 16 + 4 * p..r * 16 + 4 * p + 4].to_vec()).collect();
        let b_p = b[4 * p * 8..(4 * p + 4) * 8].to_vec();
        bufs.push([c.buffer_from_f32(&a_p, &[8, 4], dev).unwrap(), c.buffer_from_f32(&b_p, &[4, 8], dev).unwrap()]);
    }
    let args: Vec<Vec<&Buffer>> = bufs.iter().map(|[x, y]| vec![x, y]).collect();
    // Whole arrays instead of shards are caught before the call.
    let whole = c.buffer_from_f32(&a, &[8, 16], &devices[0]).unwrap();
    let mut wrong = args.clone();
    wrong[0][0] = &whole;
    let err = exe.execute(&wrong).unwrap_err().to_string();
    assert!(err.contains("argument 0 (partition 0)") && err.contains("[8, 4]"), "{err}");
    let out = exe.execute(&args).unwrap();
    let full = matmul(&a, &b, 8, 16, 8);
    for (p, o) in out.iter().enumerate() {
        assert_eq!(o[0].device().unwrap(), devices[p]);
        assert_close(&o[0].to_vec::<f32>().unwrap(), &full, 1e-6, &format!("replicated output on partition {p}"));
        let rows: Vec<f32> = full[2 * p * 8..(2 * p + 2) * 8].iter().map(|x| 2.0 * x).collect();
        assert_eq!(o[1].dims().unwrap(), vec![2, 8]);
        assert_close(&o[1].to_vec::<f32>().unwrap(), &rows, 1e-6, &format!("row shard {p}"));
    }
    let hlo = exe.optimized_hlo_text().unwrap();
    assert!(hlo.contains("all-reduce") || hlo.contains("reduce-scatter"), "{hlo}");
    assert!(hlo.contains("f32[8,4]"), "partitioned parameters: {hlo}");
}

#[test]
fn donation_deletes_the_input_unless_non_donatable() {
    let c = client(1);
    let dev = &c.addressable_devices()[0];
    let exe = c.compile_mlir(DONATE, &CompileOptions::default()).unwrap();
    assert_eq!(exe.memory_stats().unwrap().alias_size_in_bytes, 16 * 8 * 4);
    let (x, y) = (data(128, 7), data(128, 8));
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();

    let xb = c.buffer_from_f32(&x, &[16, 8], dev).unwrap();
    let yb = c.buffer_from_f32(&y, &[16, 8], dev).unwrap();
    let kept = exe.execute_with(&[vec![&xb, &yb]], &[0]).unwrap();
    assert!(!xb.is_deleted().unwrap());
    assert_close(&kept[0][0].to_vec::<f32>().unwrap(), &want, 0.0, "non-donated");

    let out = exe.execute(&[vec![&xb, &yb]]).unwrap();
    assert!(xb.is_deleted().unwrap(), "donated input must be deleted");
    assert!(!yb.is_deleted().unwrap());
    assert_close(&out[0][0].to_vec::<f32>().unwrap(), &want, 0.0, "donated");
    assert!(xb.to_bytes().is_err());
    let err = exe.execute(&[vec![&xb, &yb]]).unwrap_err().to_string();
    assert!(err.contains("argument 0") && err.contains("donated"), "{err}");
}

#[test]
fn bad_mlir_reports_the_parse_error() {
    let c = client(1);
    let err = c.compile_mlir("module { func.func public @main() { bogus } }", &CompileOptions::default());
    let err = err.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Pjrt { function: "PJRT_Client_Compile", .. }), "{err:?}");
    assert!(msg.contains("error: custom op 'bogus' is unknown"), "{msg}");
}

#[test]
fn argument_errors_are_caught_before_execute() {
    let c = client(2);
    let exe = c.compile_mlir(MATMUL_F32, &CompileOptions::default()).unwrap();
    let dev0 = &exe.addressable_devices()[0];
    let other = c.addressable_devices().iter().find(|d| *d != dev0).unwrap();
    let a = c.buffer_from_f32(&data(32, 1), &[4, 8], dev0).unwrap();
    let b = c.buffer_from_f32(&data(128, 2), &[8, 16], dev0).unwrap();

    let err = exe.execute(&[vec![&a]]).unwrap_err().to_string();
    assert!(err.contains("2 argument") && err.contains("1 were given"), "wrong count: {err}");

    let small = c.buffer_from_f32(&data(16, 1), &[4, 4], dev0).unwrap();
    let err = exe.execute(&[vec![&small, &b]]).unwrap_err().to_string();
    assert!(err.contains("argument 0") && err.contains("[4, 4]") && err.contains("[4, 8]"), "wrong shape: {err}");

    let elsewhere = c.buffer_from_f32(&data(128, 2), &[8, 16], other).unwrap();
    let err = exe.execute(&[vec![&a, &elsewhere]]).unwrap_err().to_string();
    assert!(err.contains("argument 1") && err.contains("device"), "wrong device: {err}");

    let err = exe.execute(&[vec![&a, &b], vec![&a, &b]]).unwrap_err().to_string();
    assert!(err.contains("2 device") && err.contains("runs on 1"), "wrong device count: {err}");

    let err = c.buffer_from_bytes(&[0u8; 12], DType::F32, &[2, 2], dev0).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(exe.execute(&[vec![&a, &b]]).is_ok());
}

#[test]
fn invalid_compile_options_are_rejected_before_the_plugin() {
    let c = client(4);
    let zero_parts = CompileOptions { num_partitions: 0, ..CompileOptions::spmd(4) };
    let err = c.compile_mlir(MATMUL_F32, &zero_parts).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("num_partitions")), "{err}");
    let zero_reps = CompileOptions { num_replicas: 0, ..CompileOptions::default() };
    assert!(matches!(c.compile_mlir(MATMUL_F32, &zero_reps), Err(Error::InvalidArgument(_))));
    let bad_assignment = CompileOptions::spmd(4).with_device_assignment(vec![0, 1]);
    assert!(matches!(c.compile_mlir(SPMD_SDY, &bad_assignment), Err(Error::InvalidArgument(_))));
    // A valid reversed assignment: partition p runs on device 3 - p.
    let reversed = CompileOptions::spmd(4).with_device_assignment(vec![3, 2, 1, 0]);
    let exe = c.compile_mlir(SPMD_SDY, &reversed).unwrap();
    let ids: Vec<i32> = exe.addressable_devices().iter().map(|d| d.id()).collect();
    assert_eq!(ids, vec![3, 2, 1, 0]);
}

#[test]
fn missing_or_bogus_plugin_paths_are_clear_errors() {
    let err = open_client(Hardware::Cpu, Some(Path::new("/nonexistent/xla_cpu_pjrt.so")), None).unwrap_err();
    assert!(matches!(err, Error::PluginNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/xla_cpu_pjrt.so"), "{err}");

    let not_a_plugin = std::env::temp_dir().join(format!("maxtext-not-a-plugin-{}.so", std::process::id()));
    std::fs::write(&not_a_plugin, b"this is not an ELF file").unwrap();
    let err = Plugin::load(&not_a_plugin).unwrap_err();
    let _ = std::fs::remove_file(&not_a_plugin);
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot load PJRT plugin"), "{err}");
}

#[test]
fn executable_cache_hits_on_the_second_compile() {
    let c = client(1);
    let cache = ExecutableCache::new();
    let first = cache.get_or_compile(&c, MATMUL_F32, &CompileOptions::default()).unwrap();
    let t = std::time::Instant::now();
    let second = cache.get_or_compile(&c, MATMUL_F32, &CompileOptions::default()).unwrap();
    assert!(t.elapsed().as_millis() < 20, "a hit must not compile");
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 1, 1));
    // Different options or another client miss.
    cache.get_or_compile(&c, MATMUL_F32, &CompileOptions::spmd(1)).unwrap();
    cache.get_or_compile(&client(1), MATMUL_F32, &CompileOptions::default()).unwrap();
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 3, 3));
}

#[test]
fn executables_and_buffers_are_shared_across_threads() {
    let c = client(2);
    let exe = c.compile_mlir(MATMUL_F32, &CompileOptions::default()).unwrap();
    let dev = exe.addressable_devices()[0].clone();
    let (a, b) = (data(32, 9), data(128, 10));
    let want = matmul(&a, &b, 4, 8, 16);
    let ab = c.buffer_from_f32(&a, &[4, 8], &dev).unwrap();
    let bb = c.buffer_from_f32(&b, &[8, 16], &dev).unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..5 {
                    let out = exe.execute(&[vec![&ab, &bb]]).unwrap();
                    assert_close(&out[0][0].to_vec::<f32>().unwrap(), &want, 1e-6, "threaded");
                }
            });
        }
    });
}
