#!/usr/bin/env python3
"""Interop between our Rust Orbax reader/writer and the real orbax-checkpoint 0.12.8 (tests/orbax_interop.rs).

Run with the venv from scripts/setup_orbax_venv.sh:

  orbax_interop.py restore <root> <step>...   orbax restores checkpoints our Rust writer saved under <root> (the
                                              CheckpointManager layout <root>/<step>/items) in four ways, and
                                              compares every array with WRITTEN_BY_RUST recomputed here
  orbax_interop.py write <out_dir>            orbax saves PYTHON_TREE in three layouts; every array's raw bytes
                                              and an index (expected.json) go next to them for the Rust reader
  orbax_interop.py dump <item_dir> <out_dir>  targetless restore of a sharded save (needs as many host devices as
                                              its mesh: XLA_FLAGS=--xla_force_host_platform_device_count=N);
                                              raw bytes and shardings (restored.json) go to <out_dir>

The tree WRITTEN_BY_RUST must match `rust_tree()` in tests/orbax_interop.rs value for value.
"""
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import absl.logging  # noqa: E402

absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about the tiny chunk sizes used on purpose

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the trees hold int64 / float64 leaves

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

BF16 = ml_dtypes.bfloat16
F32 = np.float32


def arange_f32(n):
    return np.arange(n, dtype=F32)


def written_by_rust():
    """Leaf name -> numpy value, exactly as tests/orbax_interop.rs writes them."""
    i = np.arange(64 * 64, dtype=np.int64)
    return {
        "params.dense.kernel": (arange_f32(12) * F32(0.5)).reshape(3, 4),
        "params.dense.bias": np.array([1.0, -2.0, 3.5, 0.25], dtype=F32).astype(BF16),
        "params.embed": arange_f32(24).reshape(2, 3, 4),
        "params.scale": np.array(3.25, dtype=F32),
        "params.big": (((i * 7919) % 10007).astype(F32) / F32(10007)).reshape(64, 64),
        "params.half": (arange_f32(7) / F32(3)).astype(np.float16),
        "params.bf": (arange_f32(30) * F32(0.37) - F32(3.0)).astype(BF16).reshape(5, 6),
        "step": np.array(7, dtype=np.int32),
        "counts": np.arange(1, 7, dtype=np.int32).reshape(2, 3),
        "opt_state.0.count": np.array(3, dtype=np.int32),
        "opt_state.0.mu.w": np.full((4,), 0.5, dtype=F32),
        "wide.f64": np.array([np.pi, -1e300, 0.0], dtype=np.float64),
        "wide.i64": np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max], dtype=np.int64),
        "rng.key": np.array([[1, 2, 0xDEADBEEF, 0xFFFFFFFF]], dtype=np.uint32),
        "mask": np.array([[True, False], [True, True]]),
        "bytes": np.array([0, 255, 7], dtype=np.uint8),
        "small": np.array([-128, 127], dtype=np.int8),
        "empty": np.zeros((0, 3), dtype=F32),
    }


def flatten(tree, prefix=()):
    """(key path strings, leaf) pairs; lists and tuples by index, dicts by key."""
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from flatten(tree[k], prefix + (str(k),))
    elif isinstance(tree, (list, tuple)):
        for n, v in enumerate(tree):
            yield from flatten(v, prefix + (str(n),))
    else:
        yield prefix, tree


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_restored(tree, what):
    want = written_by_rust()
    got = {".".join(p): v for p, v in flatten(tree)}
    if set(got) != set(want):
        raise SystemExit(f"{what}: leaves {sorted(set(got) ^ set(want))} differ")
    bad = [n for n in want if not same(np.asarray(got[n]), want[n])]
    if bad:
        n = bad[0]
        raise SystemExit(f"{what}: {len(bad)} arrays differ, e.g. {n}: {np.asarray(got[n])!r} != {want[n]!r}")
    # Sequence keys (key_type 1) come back as lists.
    if not isinstance(tree["opt_state"], list):
        raise SystemExit(f"{what}: opt_state restored as {type(tree['opt_state']).__name__}, not list")
    print(f"OK {what}: {len(want)} arrays equal")


def abstract(tree):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree)


def restore(root, steps):
    handler = lambda: ocp.PyTreeCheckpointHandler(use_ocdbt=True, use_zarr3=True)  # noqa: E731
    for step in steps:
        items = os.path.join(root, str(step), "items")
        restored = ocp.PyTreeCheckpointer().restore(items)
        check_restored(restored, f"step {step}: PyTreeCheckpointer().restore")
        check_restored(ocp.StandardCheckpointer().restore(items), f"step {step}: StandardCheckpointer().restore")
        mngr = ocp.CheckpointManager(root, item_names=("items",), item_handlers={"items": handler()})
        if sorted(mngr.all_steps()) != sorted(int(s) for s in steps):
            raise SystemExit(f"CheckpointManager.all_steps() = {mngr.all_steps()}, expected {steps}")
        out = mngr.restore(step, args=ocp.args.Composite(items=ocp.args.PyTreeRestore()))
        check_restored(out["items"], f"step {step}: CheckpointManager(item_names=('items',)).restore")
        # MaxText's restore: an abstract target (shapes, dtypes, shardings) with restore args.
        target = abstract(restored)
        args = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))
        out = mngr.restore(step, args=ocp.args.Composite(items=args))
        check_restored(out["items"], f"step {step}: CheckpointManager restore with a target (MaxText style)")
        mngr.close()
        bare = ocp.CheckpointManager(root)
        check_restored(bare.restore(step)["items"], f"step {step}: CheckpointManager(root).restore(step)")
        bare.close()


def python_tree():
    rng = np.random.default_rng(0)
    return {
        "params": {
            "w": jnp.asarray(rng.standard_normal((64, 64), dtype=np.float32)),
            "b": jnp.asarray(np.linspace(-1, 1, 8, dtype=np.float32).astype(BF16)),
            "scale": jnp.asarray(np.float32(3.25)),
        },
        "layers": [{"k": jnp.arange(6, dtype=jnp.int32).reshape(2, 3)}, {"k": jnp.full((2, 3), -5, jnp.int32)}],
        "step": jnp.asarray(np.int32(11)),
        "count": 42,
        "nothing": None,
    }


def write(out):
    tree = python_tree()
    layouts = {
        # MaxText's CheckpointManager save (OCDBT + zarr3), step 3.
        "manager/3/items": None,
        # v0 API defaults: OCDBT + zarr v2.
        "pytree_ocdbt_zarr2": ocp.PyTreeCheckpointHandler(use_ocdbt=True, use_zarr3=False),
        # Plain zarr3 directories, chunked.
        "plain_zarr3_chunked": ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=True),
    }
    for rel, handler in layouts.items():
        path = os.path.join(out, rel)
        if handler is None:
            mngr = ocp.CheckpointManager(
                os.path.join(out, "manager"),
                item_names=("items",),
                item_handlers={"items": ocp.PyTreeCheckpointHandler(use_ocdbt=True, use_zarr3=True)},
                options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
            )
            save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=2**31), tree)
            mngr.save(3, args=ocp.args.Composite(items=ocp.args.PyTreeSave(
                item=tree, save_args=save_args, ocdbt_target_data_file_size=2**31)))
            mngr.wait_until_finished()
            mngr.close()
        else:
            save_args = None
            if rel.endswith("chunked"):
                save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=1024), tree)
            ocp.Checkpointer(handler).save(path, args=ocp.args.PyTreeSave(tree, save_args=save_args))
    leaves = []
    for p, v in flatten(tree):
        name = ".".join(p)
        if v is None:
            leaves.append({"name": name, "kind": "none"})
            continue
        a = np.asarray(v)
        if isinstance(v, int):
            a = np.asarray(v, dtype=np.int64)  # a Python int is stored as a 0-d int64 array
        file = f"{name}.bin"
        with open(os.path.join(out, file), "wb") as f:
            f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
        leaves.append({"name": name, "kind": "scalar" if isinstance(v, int) else "array",
                       "dtype": str(a.dtype), "shape": list(a.shape), "file": file})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"items": list(layouts), "leaves": leaves}, f, indent=1)
    print(f"OK wrote {len(layouts)} checkpoints with {len(leaves)} leaves to {out}")


def dump(items, out):
    """Targetless restore of a checkpoint saved sharded (run with 4 host devices); every leaf's raw bytes
    and its restored sharding go to <out> for the Rust side to compare."""
    restored = ocp.PyTreeCheckpointer().restore(items)
    index = []
    for p, v in flatten(restored):
        name = ".".join(p)
        a = np.asarray(v)
        with open(os.path.join(out, f"{name}.bin"), "wb") as f:
            f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
        sharding = getattr(v, "sharding", None)
        spec = [None if s is None else (s if isinstance(s, str) else list(s)) for s in sharding.spec] if hasattr(sharding, "spec") else None
        devices = len(sharding.device_set) if sharding is not None else 0
        index.append({"name": name, "dtype": str(a.dtype), "shape": list(a.shape), "spec": spec, "devices": devices})
    with open(os.path.join(out, "restored.json"), "w") as f:
        json.dump(index, f, indent=1)
    print(f"OK restored {len(index)} sharded leaves on {len(jax.devices())} devices")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "restore":
        restore(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        raise SystemExit(__doc__)
