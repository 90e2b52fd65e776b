#!/usr/bin/env python3
"""Writes tests/fixtures/synthetic/maxtext_0.2.5.json: the batches MaxText 0.2.5's `SyntheticDataIterator`
(`dataset_type=synthetic`) yields for a few small configs, under both PRNG implementations a MaxText run can
use (`unsafe_rbg`, which `train.py` forces with `jax.config.update("jax_default_prng_impl", "unsafe_rbg")`,
and JAX's default `threefry2x32`), computed by real JAX on its CPU backend. It is the reference of
tests/synthetic_vs_jax.rs.

The iterator is MaxText's own class, loaded from the released wheel's source: only its sharding helpers
are replaced (one CPU device, no mesh axes), since they decide where the batch lives, not its values.

    python3 -m venv ~/.cache/maxtext-rs/jax-venv
    ~/.cache/maxtext-rs/jax-venv/bin/pip install jax==0.11.1 jaxlib==0.11.1   # MaxText 0.2.5: jax>=0.11.1
    pip download --no-deps maxtext==0.2.5 -d /tmp/mt                          # the wheel holds the source
    ~/.cache/maxtext-rs/jax-venv/bin/python scripts/make_synthetic_reference.py \
        /tmp/mt/maxtext-0.2.5-py3-none-any.whl [OUT]
"""
import json
import os
import sys
import types
import zipfile
from types import SimpleNamespace

os.environ["JAX_PLATFORMS"] = "cpu"
import jax  # noqa: E402
import numpy as np  # noqa: E402

# (name, prng impl, global_batch_size_to_load, max_target_length, vocab_size, packing, max_segments_per_seq).
# Odd sizes on purpose: odd element counts, a vocab above 2^16 (the u32 products in randint wrap), segment
# caps above the length (clamped to it), caps below 2 (no packing), a length of 1.
CONFIGS = [
    ("rbg_plain", "unsafe_rbg", 2, 8, 1000, False, 32),
    ("rbg_packed_qwen_vocab", "unsafe_rbg", 3, 7, 151936, True, 4),
    ("rbg_packed_long", "unsafe_rbg", 4, 33, 256, True, 32),
    ("rbg_packed_cap_above_len", "unsafe_rbg", 1, 5, 7, True, 16),
    ("rbg_packed_cap_one", "unsafe_rbg", 2, 6, 50, True, 1),
    ("rbg_len_one", "unsafe_rbg", 3, 1, 65537, True, 8),
    ("threefry_plain", "threefry2x32", 2, 8, 1000, False, 32),
    ("threefry_packed_qwen_vocab", "threefry2x32", 3, 7, 151936, True, 4),
    ("threefry_packed_long", "threefry2x32", 4, 33, 256, True, 32),
    ("threefry_packed_cap_above_len", "threefry2x32", 1, 5, 7, True, 16),
    # The batch of tests/fixtures/maxtext_qwen3next_tiny_trimmed's MaxText run (packing on, no segment cap).
    ("rbg_maxtext_tiny_run", "unsafe_rbg", 1, 128, 1024, True, -1),
    ("threefry_maxtext_tiny_run", "threefry2x32", 1, 128, 1024, True, -1),
]


def load_synthetic_module(wheel):
    """MaxText's input_pipeline/synthetic_data_processing.py from the wheel, with its imports of MaxText's
    sharding and multi-host helpers stubbed (they only place the arrays)."""
    with zipfile.ZipFile(wheel) as z:
        source = z.read("maxtext/input_pipeline/synthetic_data_processing.py").decode()
        version = z.read("maxtext-0.2.5.dist-info/METADATA").decode().split("\nVersion: ")[1].split("\n")[0]
    stubs = {
        "maxtext": types.ModuleType("maxtext"),
        "maxtext.input_pipeline": types.ModuleType("maxtext.input_pipeline"),
        "maxtext.input_pipeline.multihost_dataloading": types.ModuleType("multihost_dataloading"),
        "maxtext.configs": types.ModuleType("maxtext.configs"),
        "maxtext.configs.pyconfig": types.ModuleType("pyconfig"),
        "maxtext.utils": types.ModuleType("maxtext.utils"),
        "maxtext.utils.diloco_sharding": types.ModuleType("diloco_sharding"),
        "maxtext.utils.sharding": types.ModuleType("sharding"),
    }
    stubs["maxtext.configs.pyconfig"].HyperParameters = object
    stubs["maxtext.utils.diloco_sharding"].reshape_first_axis_with_diloco = None  # enable_diloco=False below
    stubs["maxtext.utils.sharding"].get_input_data_sharding = lambda config, mesh: None
    stubs["maxtext.input_pipeline"].multihost_dataloading = stubs["maxtext.input_pipeline.multihost_dataloading"]
    stubs["maxtext.configs"].pyconfig = stubs["maxtext.configs.pyconfig"]
    stubs["maxtext.utils"].diloco_sharding = stubs["maxtext.utils.diloco_sharding"]
    stubs["maxtext.utils"].sharding = stubs["maxtext.utils.sharding"]
    sys.modules.update(stubs)
    module = types.ModuleType("synthetic_data_processing")
    exec(compile(source, "maxtext/input_pipeline/synthetic_data_processing.py", "exec"), module.__dict__)
    return module, version


class Hashable(SimpleNamespace):
    # jax.jit's static_argnums=0 needs a hashable config (MaxText's HyperParameters is one).
    def __hash__(self):
        return hash(tuple(sorted(self.__dict__.items())))


def main():
    wheel = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/synthetic/maxtext_0.2.5.json"
    synthetic, maxtext_version = load_synthetic_module(wheel)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    cases = []
    for name, impl, rows, length, vocab, packing, max_segs in CONFIGS:
        jax.config.update("jax_default_prng_impl", impl)
        cfg = Hashable(global_batch_size_to_load=rows, max_target_length=length, vocab_size=vocab,
                       packing=packing, max_segments_per_seq=max_segs, enable_diloco=False)
        it = synthetic.SyntheticDataIterator(cfg, mesh)
        first, second = next(it), next(it)
        case = {"name": name, "prng_impl": impl, "global_batch_size_to_load": rows, "max_target_length": length,
                "vocab_size": vocab, "packing": packing, "max_segments_per_seq": max_segs}
        for k in ["inputs", "targets", "inputs_position", "targets_position", "inputs_segmentation",
                  "targets_segmentation"]:
            a, b = np.asarray(first[k]), np.asarray(second[k])
            assert a.shape == (rows, length) and a.dtype == np.int32, (name, k, a.shape, a.dtype)
            assert (a == b).all(), f"{name}: {k} changed between steps"
            case[k] = a.reshape(-1).tolist()
        cases.append(case)
    doc = {
        "about": "MaxText SyntheticDataIterator batches (one batch, identical at every step), row-major "
                 "[global_batch_size_to_load, max_target_length]; written by scripts/make_synthetic_reference.py",
        "maxtext": maxtext_version,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
        "backend": jax.default_backend(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
