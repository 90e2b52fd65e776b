#!/usr/bin/env python3
"""Writes tests/fixtures/ir_ops/numpy_f32.safetensors: inputs and numpy's float32 results of the ops the model
is built from (elementwise transcendentals, matmul, reductions, cumulative sum, softmax, sort), the reference
of tests/ir_ops_vs_numpy.rs. numpy computes in float32 with its own kernels (SIMD exp/log/tanh, pairwise
sums, BLAS sgemm), independently of XLA and of the tests' f64 host math.

    python3 scripts/make_ir_op_reference.py [OUT]      # needs numpy (pip install numpy)
"""
import json
import struct
import sys

import numpy as np


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dtype = {np.dtype("float32"): "F32", np.dtype("int32"): "I32"}[a.dtype]
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ir_ops/numpy_f32.safetensors"
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, (4, 33)).astype(np.float32)
    p = rng.uniform(0.01, 9, (4, 33)).astype(np.float32)
    y = rng.uniform(-2, 2, (33, 5)).astype(np.float32)
    one = np.float32(1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    t = {
        "x": x,
        "p": p,
        "y": y,
        "exp_x": np.exp(x),
        "log_p": np.log(p),
        "tanh_x": np.tanh(x),
        "sqrt_p": np.sqrt(p),
        "rsqrt_p": one / np.sqrt(p),
        "sigmoid_x": one / (one + np.exp(-x)),
        "matmul_xy": x @ y,
        "sum_x_1": x.sum(axis=1, dtype=np.float32),
        "max_x_1": x.max(axis=1),
        "cumsum_x_1": np.cumsum(x, axis=1, dtype=np.float32),
        "softmax_x_1": e / e.sum(axis=1, keepdims=True, dtype=np.float32),
        "sort_x_1": np.sort(x, axis=1, kind="stable"),
        "argsort_x_1": np.argsort(x, axis=1, kind="stable").astype(np.int32),
    }
    for k, v in t.items():
        assert v.dtype in (np.float32, np.int32), (k, v.dtype)
    write_safetensors(out, t, {"made_by": f"numpy {np.__version__}, float32", "script": "scripts/make_ir_op_reference.py"})
    print(f"{out}: {len(t)} tensors (numpy {np.__version__})")


if __name__ == "__main__":
    main()
