//! IR ops on the real XLA CPU plugin against numpy's float32 results (`tests/fixtures/ir_ops/
//! numpy_f32.safetensors`, made by `scripts/make_ir_op_reference.py`): a stored reference from an
//! independent implementation, next to the per-op tests' f64 host math.

mod common;

use common::*;
use maxtext::ir::{DType, Tensor};
use maxtext::runtime::HostTensor;

/// One tensor of the reference file as a host tensor.
fn load(st: &safetensors::SafeTensors, name: &str) -> HostTensor {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let dtype = match t.dtype() {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::I32 => DType::S32,
        d => panic!("{name}: dtype {d:?}"),
    };
    let dims: Vec<i64> = t.shape().iter().map(|d| *d as i64).collect();
    HostTensor::from_bytes(dtype, &dims, t.data().to_vec())
}

#[test]
fn ops_match_numpy_float32() {
    let bytes = std::fs::read(shipped("ir_ops/numpy_f32.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (x, p, y) = (load(&st, "x"), load(&st, "p"), load(&st, "y"));
    let outputs = [
        "exp_x", "log_p", "tanh_x", "sqrt_p", "rsqrt_p", "sigmoid_x", "matmul_xy", "sum_x_1", "max_x_1",
        "cumsum_x_1", "softmax_x_1", "sort_x_1", "argsort_x_1",
    ];
    let got = run("vs_numpy", &[x, p, y], |g, a| {
        let (x, p, y) = (&a[0], &a[1], &a[2]);
        let dims = x.dims().to_vec();
        let row_max = x.reduce_max(&[1]).broadcast_in_dim(&dims, &[0]);
        let e = (x - &row_max).exp();
        let softmax = &e / &e.sum(&[1]).broadcast_in_dim(&dims, &[0]);
        let positions = g.iota(DType::S32, &dims, 1);
        let sorted: Vec<Tensor> = g.sort(&[x.clone(), positions], 1, false, true);
        vec![
            x.exp(),
            p.log(),
            x.tanh(),
            p.sqrt(),
            p.rsqrt(),
            x.sigmoid(),
            x.matmul(y),
            x.sum(&[1]),
            x.reduce_max(&[1]),
            x.cumsum(1),
            softmax,
            sorted[0].clone(),
            sorted[1].clone(),
        ]
    });
    // f32 results of two implementations: a few ulps apart elementwise; sums in another order differ by
    // about ulp x the number of terms (33) of the magnitudes summed (|x| <= 4).
    let elementwise = Tol { rtol: 2e-6, atol: 1e-6 };
    let summed = Tol { rtol: 2e-6, atol: 33.0 * 4.0 * 1.2e-7 };
    for (name, ours) in outputs.iter().zip(&got) {
        let want = load(&st, name);
        assert_eq!(ours.dims, want.dims, "{name}: shape");
        match *name {
            "argsort_x_1" => assert_exact(&ours.to_i64(), &want.to_i64(), name),
            "sort_x_1" | "max_x_1" => assert_exact(&ours.to_f64(), &want.to_f64(), name),
            "matmul_xy" | "sum_x_1" | "cumsum_x_1" => assert_close(&ours.to_f64(), &want.to_f64(), summed, name),
            _ => assert_close(&ours.to_f64(), &want.to_f64(), elementwise, name),
        }
    }
}
