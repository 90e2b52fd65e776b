#!/usr/bin/env python3
"""Writes lm-eval task YAMLs for MMLU over local JSONL files (the cais/mmlu schema), so lm-eval runs offline:
the built-in `mmlu` prompt (0-shot, `acc`) with only the dataset changed to `json` + `data_files`.

    scripts/make_mmlu_tasks.py [MMLU_DIR] OUT_DIR     # MMLU_DIR defaults to ../shared/fixtures/mmlu
                                                      # (the full split) if present, else assets/mmlu

Creates OUT_DIR/_mmlu_local_template_yaml, one OUT_DIR/mmlu_local_<subject>.yaml per subject (task
`mmlu_local_<subject>`) and the group OUT_DIR/mmlu_local.yaml (`mmlu_local`, pooled accuracy as lm-eval's
`mmlu`). Use with `lm_eval --include_path OUT_DIR --tasks mmlu_local` (or single subjects).
"""
import json
import os
import sys

TEMPLATE = """dataset_path: json
test_split: test
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def main():
    args = sys.argv[1:]
    if len(args) == 1:
        here = os.path.dirname(os.path.abspath(__file__))
        full = os.path.join(here, "..", "..", "shared", "fixtures", "mmlu")
        shipped = os.path.join(here, "..", "assets", "mmlu")
        mmlu, out = (full if os.path.isdir(os.path.join(full, "test")) else shipped), args[0]
    elif len(args) == 2:
        mmlu, out = args
    else:
        sys.exit(__doc__)
    test = os.path.abspath(os.path.join(mmlu, "test"))
    subjects = sorted(f[: -len(".jsonl")] for f in os.listdir(test) if f.endswith(".jsonl"))
    if not subjects:
        sys.exit(f"no <subject>.jsonl under {test}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "_mmlu_local_template_yaml"), "w") as f:
        f.write(TEMPLATE)
    for s in subjects:
        desc = "The following are multiple choice questions (with answers) about " + " ".join(s.split("_")) + ".\n\n"
        with open(os.path.join(out, f"mmlu_local_{s}.yaml"), "w") as f:
            f.write("include: _mmlu_local_template_yaml\n")
            f.write(f"task: mmlu_local_{s}\n")
            f.write(f"task_alias: {s}\n")
            f.write("dataset_kwargs:\n  data_files:\n")
            f.write(f"    test: {json.dumps(os.path.join(test, s + '.jsonl'))}\n")
            f.write(f"description: {json.dumps(desc)}\n")
    with open(os.path.join(out, "mmlu_local.yaml"), "w") as f:
        f.write("group: mmlu_local\ntask:\n")
        for s in subjects:
            f.write(f"  - mmlu_local_{s}\n")
        f.write("aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1.0\n")
    print(f"{len(subjects)} subjects -> {out}")


if __name__ == "__main__":
    main()
