//! SPMD on the real XLA CPU plugin: a sharded matmul + reduction + while loop on 4 and 8 devices, 1-D and
//! 2-D meshes, gives the single-device result; outputs land on the right devices with shard shapes.

use maxtext::ir::{DType, Graph, Mesh, Program, Sharding, Tensor, TensorType};
use maxtext::pjrt::{open_client, Buffer, Hardware};
use maxtext::runtime::{HostTensor, Runtime};

const M: i64 = 16;
const K: i64 = 32;
const N: i64 = 8;

/// y = x @ w; then 3 iterations of y = tanh(y) * 0.5 + y; returns (y, sum over rows of y).
fn trace() -> maxtext::ir::Func {
    let g = Graph::new();
    let x = g.param(TensorType::named(DType::F32, &[M, K], &["rows", "k"]));
    let w = g.param(TensorType::named(DType::F32, &[K, N], &["k", "cols"]));
    let y = x.dot(&w, &["k"]);
    let out = g.fori_loop(0, 3, &[y], |_, _, c| {
        let y: &Tensor = &c[0];
        vec![&y.tanh().mul_scalar(0.5) + y]
    });
    let y = out[0].clone();
    let s = y.sum_over(&["rows"]);
    g.finish(&[y, s])
}

fn inputs() -> Vec<HostTensor> {
    let x: Vec<f32> = (0..M * K).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let w: Vec<f32> = (0..K * N).map(|i| ((i * 53 % 89) as f32 - 44.0) / 88.0).collect();
    vec![HostTensor::from_f32(&x, &[M, K]), HostTensor::from_f32(&w, &[K, N])]
}

fn host_reference() -> (Vec<f32>, Vec<f32>) {
    let inp = inputs();
    let (x, w) = (inp[0].to_f32(), inp[1].to_f32());
    let mut y = vec![0f32; (M * N) as usize];
    for i in 0..M as usize {
        for j in 0..N as usize {
            y[i * N as usize + j] = (0..K as usize).map(|k| x[i * K as usize + k] * w[k * N as usize + j]).sum();
        }
    }
    for _ in 0..3 {
        y = y.iter().map(|v| v.tanh() * 0.5 + v).collect();
    }
    let s = (0..N as usize).map(|j| (0..M as usize).map(|i| y[i * N as usize + j]).sum()).collect();
    (y, s)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Runs the program with `x` sharded as `xs`, `w` as `ws`, y as `ys`, on `mesh`; checks values against
/// the host reference and the single-device run, and the device placement and shard shapes of y.
fn check(devices: i64, mesh: Mesh, xs: Sharding, ws: Sharding, ys: Sharding, y_shard: &[i64]) {
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(devices)).expect("CPU client"));
    let single = Program::new("single", trace());
    let sharded = Program::new("sharded", trace())
        .with_mesh(mesh.clone())
        .shard_arg(0, xs)
        .shard_arg(1, ws)
        .shard_result(0, ys);
    let one = rt.run(&single, &inputs()).expect("single-device run");
    let many = rt.run(&sharded, &inputs()).expect("sharded run");
    let (y_ref, s_ref) = host_reference();
    assert_close(&one[0].to_f32(), &y_ref, 1e-5, "single y");
    assert_close(&one[1].to_f32(), &s_ref, 1e-5, "single sum");
    assert_close(&many[0].to_f32(), &one[0].to_f32(), 1e-5, "sharded y");
    assert_close(&many[1].to_f32(), &one[1].to_f32(), 1e-5, "sharded sum");

    // Placement: output p of partition p lives on the executable's p-th device, with the shard shape.
    let exe = rt.compile(&sharded).unwrap();
    assert_eq!(exe.addressable_devices().len(), devices as usize);
    let args = rt.upload_group(&sharded, &exe, "", &inputs()).unwrap();
    // Per array -> per device, as PJRT takes them.
    let refs: Vec<Vec<&Buffer>> = (0..devices as usize).map(|d| args.iter().map(|a| &a[d]).collect()).collect();
    let outs = exe.execute(&refs).unwrap();
    for (p, dev_outs) in outs.iter().enumerate() {
        let want = exe.addressable_devices()[p].id();
        assert_eq!(dev_outs[0].device().unwrap().id(), want, "partition {p} output device");
        assert_eq!(dev_outs[0].dims().unwrap(), y_shard, "partition {p} shard shape of y");
        assert_eq!(dev_outs[1].dims().unwrap(), vec![N], "partition {p}: the sum is replicated");
    }
    assert!(rt.cache().len() >= 2, "both programs cached");
}

#[test]
fn one_d_mesh_4_devices_rows_sharded() {
    let mesh = Mesh::new(&[("fsdp", 4)]);
    check(4, mesh, Sharding::new(&[&["fsdp"], &[]]), Sharding::replicated(2), Sharding::new(&[&["fsdp"], &[]]), &[M / 4, N]);
}

#[test]
fn one_d_mesh_4_devices_contracting_dim_sharded() {
    // k sharded on both operands: the matmul needs an all-reduce.
    let mesh = Mesh::new(&[("tensor", 4)]);
    check(4, mesh, Sharding::new(&[&[], &["tensor"]]), Sharding::new(&[&["tensor"], &[]]), Sharding::replicated(2), &[M, N]);
}

#[test]
fn two_d_mesh_8_devices() {
    let mesh = Mesh::new(&[("fsdp", 4), ("tensor", 2)]);
    check(
        8,
        mesh,
        Sharding::new(&[&["fsdp"], &["tensor"]]),
        Sharding::new(&[&["tensor"], &[]]),
        Sharding::new(&[&["fsdp"], &["tensor"]]),
        &[M / 4, N / 2],
    );
}

#[test]
fn two_d_mesh_4_devices_dim_over_two_axes() {
    let mesh = Mesh::new(&[("data", 2), ("fsdp", 2)]);
    check(
        4,
        mesh,
        Sharding::new(&[&["data", "fsdp"], &[]]),
        Sharding::replicated(2),
        Sharding::new(&[&["data", "fsdp"], &[]]),
        &[M / 4, N],
    );
}

#[test]
fn mesh_larger_than_client_is_an_error() {
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(2)).expect("CPU client"));
    let p = Program::new("too_big", trace()).with_mesh(Mesh::new(&[("fsdp", 4)]));
    let err = rt.run(&p, &inputs()).unwrap_err().to_string();
    assert!(err.contains("needs 4 devices") && err.contains("has 2"), "{err}");
}

/// A miscompilation of the XLA CPU plugin (xla-cpu-pjrt 0.0.1), kept as a repro: two dots sharing a
/// weight, with arguments x [{data, fsdp}, {}, {}] and w [{fsdp}, {tensor}] on a data=2 x fsdp=2 x tensor=2
/// mesh and the result constrained to [{data, fsdp}, {}, {tensor}], give values up to 1.8 away from the
/// single-device run; the same program with replicated arguments (same constraints inside) is exact, and
/// so is either dot alone. The model hits it with a batch split over two mesh axes plus tensor parallelism
/// on 8 devices (e.g. fsdp=2 x tensor=2 x expert=2 with 4 rows). Run with `--ignored` to see whether a
/// newer plugin fixed it.
#[test]
#[ignore = "XLA CPU plugin miscompiles this sharding (see the doc comment); run with --ignored"]
fn plugin_miscompiles_two_dots_with_major_axis_replicated_weight() {
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(8)).unwrap());
    let mesh = Mesh::new(&[("data", 2), ("fsdp", 2), ("tensor", 2)]);
    let build = |sharded: bool| {
        let g = Graph::new();
        let x = g.param(TensorType::named(DType::F32, &[4, 8, 16], &["b", "s", "e"]));
        let w = g.param(TensorType::named(DType::F32, &[16, 8], &["e", "m"]));
        let h = x.tanh().dot(&w, &["e"]);
        let o = h.tanh().dot(&w, &["m"]);
        let o = if sharded { o.with_sharding(Sharding::new(&[&["data", "fsdp"], &[], &["tensor"]])) } else { o };
        let p = Program::new("repro", g.finish(&[o]));
        if !sharded {
            return p;
        }
        p.with_mesh(mesh.clone())
            .shard_arg(0, Sharding::new(&[&["data", "fsdp"], &[], &[]]))
            .shard_arg(1, Sharding::new(&[&["fsdp"], &["tensor"]]))
            .shard_result(0, Sharding::replicated(3))
    };
    let x: Vec<f32> = (0..4 * 8 * 16).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let w: Vec<f32> = (0..16 * 8).map(|i| ((i * 53 % 89) as f32 - 44.0) / 88.0).collect();
    let inputs = vec![HostTensor::from_f32(&x, &[4, 8, 16]), HostTensor::from_f32(&w, &[16, 8])];
    let one = rt.run(&build(false), &inputs).unwrap()[0].to_f32();
    let many = rt.run(&build(true), &inputs).unwrap()[0].to_f32();
    assert_close(&many, &one, 1e-5, "two dots on data=2 x fsdp=2 x tensor=2");
}
