#!/usr/bin/env bash
# Puts the optional reference sets that this repository's history holds (HF references that left the
# tracked tree to keep it small: tiny-8layers-gqa4, 32 MB with its JSON goldens) into DIR (default
# .cache/references) in the form the tests read, and prints the line that points the tests at them:
#
#   scripts/get_optional_references.sh [DIR]    # then: export MAXTEXT_RS_REFERENCES=DIR; cargo test
#
# Needs git history (not a shallow clone) and python3. The other optional sets (the whole MaxText
# checkpoint, all of MMLU and Shakespeare) are the project's shared fixtures: point MAXTEXT_RS_REFERENCES
# at that folder instead (or put it at ../shared/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.cache/references}
# The last commit that tracked tests/fixtures/hf/tiny-8layers-gqa4 (goldens as JSONL then).
COMMIT=aed30c55e982bfa45e6ae0117e04f473f3950142
if ! git cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  echo "this clone lacks commit $COMMIT (shallow?): git fetch --unshallow, or regenerate the set with" \
       "scripts/make_test_references.sh OUT_DIR (needs torch)" >&2
  exit 1
fi
mkdir -p "$DIR/hf"
for set in tiny-8layers-gqa4; do
  rm -rf "${DIR:?}/hf/$set"
  git archive "$COMMIT" "tests/fixtures/hf/$set" | tar -x -C "$DIR/hf" --strip-components=3
  python3 scripts/golden_jsonl_to_safetensors.py "$DIR/hf/$set/golden_logits.jsonl" "$DIR/hf/$set/golden_greedy.jsonl"
  rm "$DIR/hf/$set"/golden_*.jsonl
done
echo "export MAXTEXT_RS_REFERENCES=$(cd "$DIR" && pwd)"
