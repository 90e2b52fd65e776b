#!/usr/bin/env python3
"""Converts a golden JSONL file (MaxText's golden-logits format, or make_hf_reference.py's golden_greedy.jsonl)
into a binary form: `<stem>.safetensors` with every list field of every line as a tensor, and `<stem>.json`
with everything else (descriptions, margins) and the tensor names of each line.

    scripts/golden_jsonl_to_safetensors.py DIR/golden_logits.jsonl [DIR/golden_greedy.jsonl ...]

Tensors are named `<line>.<field>` (e.g. `0.tokens`, `3.logits`): lists of integers become I32 (I64 if a
value needs it), lists of floats F32, nested lists their 2-D form. The reference wrote float32 values, which
JSON holds exactly (the shortest decimal of the f32); the script checks that every float is an f32 exactly
and that reading the file back gives every value bit for bit, and refuses otherwise. Needs only Python 3.
"""
import json
import os
import struct
import sys


def flatten(v, field):
    """(shape, flat values) of a (possibly nested) rectangular list."""
    if not isinstance(v, list) or not v or not isinstance(v[0], list):
        return [len(v)], list(v)
    rows = [flatten(r, field) for r in v]
    if any(r[0] != rows[0][0] for r in rows):
        sys.exit(f"{field}: ragged nested list, cannot store as a tensor")
    return [len(v)] + rows[0][0], [x for r in rows for x in r[1]]


def tensor(field, values):
    shape, flat = flatten(values, field)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
        fits32 = all(-(2**31) <= x < 2**31 for x in flat)
        dtype, fmt = ("I32", "i") if fits32 else ("I64", "q")
    elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat):
        dtype, fmt = "F32", "f"
        for x in flat:
            if struct.unpack("<f", struct.pack("<f", x))[0] != x:
                sys.exit(f"{field}: {x!r} is not a float32 value; refusing to round it")
    else:
        sys.exit(f"{field}: a list that is neither all numbers nor all integers")
    return dtype, shape, struct.pack(f"<{len(flat)}{fmt}", *flat), flat


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8 : 8 + n])
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        fmt = {"I32": "i", "I64": "q", "F32": "f"}[t["dtype"]]
        data = buf[8 + n + a : 8 + n + b]
        out[name] = list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))
    return out


def convert(src):
    stem = src[: -len(".jsonl")] if src.endswith(".jsonl") else src
    tensors, want, records = {}, {}, []
    with open(src) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    for i, line in enumerate(lines):
        rec, names = {}, {}
        for field, value in line.items():
            if isinstance(value, list):
                name = f"{i}.{field}"
                dtype, shape, data, flat = tensor(f"{src} line {i + 1} {field}", value)
                tensors[name] = (dtype, shape, data)
                want[name] = flat
                names[field] = name
            else:
                rec[field] = value
        rec["tensors"] = names
        records.append(rec)
    write_safetensors(stem + ".safetensors", tensors)
    got = read_safetensors(stem + ".safetensors")
    for name, flat in want.items():
        # == on Python floats compares the exact values (f32 widened to f64 both sides): bit-identical.
        if got[name] != flat:
            sys.exit(f"{name}: the values read back differ from {src}")
    meta = {"converted_from": os.path.basename(src), "tensors_in": os.path.basename(stem) + ".safetensors", "lines": records}
    with open(stem + ".json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{src}: {len(lines)} lines, {len(tensors)} tensors -> {stem}.safetensors + {stem}.json (values identical)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        convert(path)
