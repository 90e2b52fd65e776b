#!/usr/bin/env bash
# Checks the slice scripts of tpu/ without GCP: `bash -n` on every tpu/*.sh, shellcheck when it is
# installed, then runs create_slice.sh, delete_slice.sh, setup_workers.sh and launch.sh with DRY_RUN=1
# and sample settings (TPU_NAME=t PROJECT=p ZONE=us-east5-a ACCELERATOR_TYPE=v5p-64) and checks the
# gcloud commands they print: flags, node names, worker counts, the multislice variables, that the
# arguments given to launch.sh reach ./maxtext on the worker unchanged (the remote command line is run
# through bash with ./maxtext stubbed), and that missing settings or a missing gcloud stop with an error.
# Exits non-zero on any mismatch.
#
# PARSE_CHECK=1 also hands every printed command to the real gcloud, with an empty configuration (no
# account), GCE metadata off and the TPU API pointed at a closed local port, and checks that gcloud
# accepts the arguments: it must fail only for want of an account, not with a usage error.
#
#   tpu/check_scripts.sh            PARSE_CHECK=1 tpu/check_scripts.sh
set -euo pipefail
TPU=$(cd "$(dirname "$0")" && pwd)
cd "$TPU"
SCRIPTS=(common.sh create_slice.sh delete_slice.sh setup_workers.sh launch.sh)

failures=0
checks=0
ok() { checks=$((checks + 1)); }
bad() {
  checks=$((checks + 1))
  failures=$((failures + 1))
  echo "FAIL: $*" >&2
}
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}
# count REGEX TEXT: how many lines of TEXT match the extended REGEX.
count() { grep -cE -- "$1" <<<"$2" || true; }
# lines N REGEX TEXT DESCRIPTION: exactly N lines match.
lines() {
  local n
  n=$(count "$2" "$3")
  if [ "$n" = "$1" ]; then ok; else bad "$4: expected $1 line(s) matching /$2/, got $n"; fi
}

# dry SCRIPT ARGS...: runs tpu/SCRIPT with the sample settings and DRY_RUN=1; sets OUT, ERR, RC.
# A stand-in for the release binary, so the checks need no build (CI builds the debug profile only).
STUB_DIR=$(mktemp -d)
trap 'rm -rf "$STUB_DIR"' EXIT
STUB=$STUB_DIR/maxtext
: >"$STUB"
SAMPLE=(TPU_NAME=t PROJECT=p ZONE=us-east5-a ACCELERATOR_TYPE=v5p-64 DRY_RUN=1 GCLOUD=gcloud "BINARY=$STUB")
dry() {
  local script=$1
  shift
  local err
  err=$(mktemp)
  RC=0
  OUT=$(env -u NUM_SLICES -u NUM_WORKERS -u QR_ID -u SPOT -u BEST_EFFORT -u RESERVED -u REMOTE_DIR -u BINARY \
    -u INTERNAL_IP -u FORWARD_ENV -u CREATE_FLAGS -u LIBTPU_VERSION -u MEGASCALE_PORT \
    "${SAMPLE[@]}" "${EXTRA[@]}" "./$script" "$@" 2>"$err") || RC=$?
  ERR=$(cat "$err")
  rm -f "$err"
  EXTRA=()
}
EXTRA=()

# remote_argv LINE: the argv ./maxtext gets on the worker from one printed ssh line, one per line
# (the printed line is re-read as shell words, then its --command runs in bash with cd/exec stubbed).
remote_argv() {
  local line=$1 a cmd=
  eval "set -- ${line#+ }"
  for a in "$@"; do
    case $a in --command=*) cmd=${a#--command=} ;; esac
  done
  [ -n "$cmd" ] || return 1
  bash -c 'cd() { :; }; exec() { shift; printf "%s\n" "$@"; }; '"$cmd"
}

echo "== bash -n"
for f in ./*.sh; do check "bash -n $f" bash -n "$f"; done
for f in "${SCRIPTS[@]}" check_scripts.sh; do
  check "$f: executable" test -x "$f" -o "$f" = common.sh
done

if command -v shellcheck >/dev/null 2>&1; then
  echo "== shellcheck"
  check "shellcheck" shellcheck -x -P SCRIPTDIR "${SCRIPTS[@]}" check_scripts.sh
else
  echo "== shellcheck: not installed, skipped"
fi

echo "== create_slice.sh"
dry create_slice.sh
check "create: exit 0 (rc=$RC: $ERR)" test "$RC" = 0
lines 1 '^\+ gcloud compute tpus queued-resources create t-qr --node-id=t --project=p --zone=us-east5-a --accelerator-type=v5p-64 --runtime-version=v2-alpha-tpuv5$' "$OUT" "create"
lines 1 '^\+ gcloud compute tpus queued-resources describe t-qr --project=p --zone=us-east5-a --format=value\\\(state\.state\\\)$' "$OUT" "create: describe for the state"
lines 2 '^\+ ' "$OUT" "create: command count"
EXTRA=(SPOT=1 RESERVED=1 QR_ID=myqr RUNTIME_VERSION=rt CREATE_FLAGS="--internal-ips --subnetwork=s")
dry create_slice.sh
lines 1 '^\+ gcloud compute tpus queued-resources create myqr --node-id=t .*--runtime-version=rt --spot --reserved --internal-ips --subnetwork=s$' "$OUT" "create SPOT/RESERVED/QR_ID/CREATE_FLAGS"
EXTRA=(BEST_EFFORT=1)
dry create_slice.sh
lines 1 '^\+ gcloud alpha compute tpus queued-resources create t-qr .* --best-effort$' "$OUT" "create BEST_EFFORT (gcloud alpha)"
EXTRA=(SPOT=1 BEST_EFFORT=1)
dry create_slice.sh
check "create: SPOT=1 with BEST_EFFORT=1 is refused" test "$RC" != 0
EXTRA=(NUM_SLICES=2)
dry create_slice.sh
lines 1 '^\+ gcloud compute tpus queued-resources create t-qr --node-count=2 --node-prefix=t --project=p ' "$OUT" "create multislice"
lines 0 '--node-id' "$OUT" "create multislice: no --node-id"
EXTRA=(ACCELERATOR_TYPE=v6e-16)
dry create_slice.sh
lines 1 'queued-resources create .*--accelerator-type=v6e-16 --runtime-version=v2-alpha-tpuv6e$' "$OUT" "create v6e runtime default"

echo "== delete_slice.sh"
dry delete_slice.sh
check "delete: exit 0 (rc=$RC: $ERR)" test "$RC" = 0
lines 1 '^\+ gcloud compute tpus queued-resources delete t-qr --project=p --zone=us-east5-a --force$' "$OUT" "delete"
lines 1 '^\+ ' "$OUT" "delete: command count"
EXTRA=(YES=1 ASYNC=1)
dry delete_slice.sh
lines 1 '^\+ gcloud compute tpus queued-resources delete t-qr .*--force --quiet --async$' "$OUT" "delete YES/ASYNC"

echo "== setup_workers.sh"
dry setup_workers.sh
check "setup: exit 0 (rc=$RC: $ERR)" test "$RC" = 0
lines 2 '^\+ gcloud compute tpus tpu-vm ssh t --project=p --zone=us-east5-a --worker=all --command=' "$OUT" "setup: ssh --worker=all"
lines 3 '^\+ gcloud compute tpus tpu-vm scp --project=p --zone=us-east5-a --worker=all ' "$OUT" "setup: scp --worker=all"
lines 1 "scp .* $STUB t:maxtext-rs/maxtext\$" "$OUT" "setup: binary"
lines 1 'scp .* --recurse configs( assets)? t:maxtext-rs/$' "$OUT" "setup: configs/ and assets/"
lines 1 'scp .* scripts/setup_libtpu\.sh t:maxtext-rs/scripts/$' "$OUT" "setup: setup_libtpu.sh"
lines 1 'ssh .*--command=mkdir\\ -p\\ ~/maxtext-rs/scripts$' "$OUT" "setup: remote mkdir"
lines 1 'ssh .*--command=cd\\ ~/maxtext-rs\\ .*scripts/setup_libtpu\.sh$' "$OUT" "setup: runs setup_libtpu.sh"
lines 5 '^\+ ' "$OUT" "setup: command count"
EXTRA=(NUM_SLICES=2 INTERNAL_IP=1 REMOTE_DIR=/opt/mt SKIP_ASSETS=1)
dry setup_workers.sh
lines 5 '^\+ gcloud compute tpus tpu-vm (ssh t-0 |scp .* t-0:)' "$OUT" "setup multislice: node t-0"
lines 5 '^\+ gcloud compute tpus tpu-vm (ssh t-1 |scp .* t-1:)' "$OUT" "setup multislice: node t-1"
lines 10 '--worker=all --internal-ip' "$OUT" "setup: INTERNAL_IP"
lines 2 '--recurse configs t-[01]:/opt/mt/$' "$OUT" "setup: REMOTE_DIR, SKIP_ASSETS"
EXTRA=(BINARY=/nonexistent/maxtext)
dry setup_workers.sh
check "setup: a missing binary is an error" test "$RC" != 0
lines 1 'no binary at /nonexistent/maxtext.*cargo build --release' "$ERR" "setup: missing binary message"
EXTRA=(REMOTE_DIR='~/a b')
dry setup_workers.sh
check "setup: REMOTE_DIR with a space is refused" test "$RC" != 0

echo "== launch.sh"
# shellcheck disable=SC2016  # the $(...) is an argument that must reach the worker unexpanded
ARGS=(train configs/base.yml model_name=qwen3-next-80b-a3b 'run_name=a b' 'x=$(echo PWNED);y' "q='it''s'" 'tab=	end')
dry launch.sh "${ARGS[@]}"
check "launch: exit 0 (rc=$RC: $ERR)" test "$RC" = 0
lines 8 '^\+ gcloud compute tpus tpu-vm ssh t --project=p --zone=us-east5-a --worker=[0-7] --command=' "$OUT" "launch v5p-64: 8 ssh lines"
for w in 0 1 2 3 4 5 6 7; do lines 1 "--worker=$w " "$OUT" "launch: --worker=$w"; done
lines 8 '--command=cd\\ ~/maxtext-rs\\ \\&\\&\\ (export\\ .*\\&\\&\\ )?exec\\ \./maxtext\\ train\\ ' "$OUT" "launch: cd REMOTE_DIR && [export ... &&] exec ./maxtext"
lines 8 'hardware=tpu$' "$OUT" "launch: hardware=tpu appended"
lines 0 'MEGASCALE' "$OUT" "launch: no MEGASCALE variables on one slice"
lines 1 "^\+ gcloud compute tpus tpu-vm describe t --project=p --zone=us-east5-a " "$OUT" "launch v5p-64: coordinator IP from worker 0"
lines 8 'NNODES=8\\ NODE_RANK=[0-7]\\ JAX_COORDINATOR_ADDRESS=10\.0\.0\.2:8476\\ ' "$OUT" "launch v5p-64: process variables on every worker"
for w in 0 3 7; do lines 1 "--worker=$w .*NODE_RANK=$w\\\\ " "$OUT" "launch: worker $w is process $w"; done
first=$(grep -m1 -- '--worker=0 ' <<<"$OUT" || true)
got=$(remote_argv "$first" || true)
want=$(printf '%s\n' "${ARGS[@]}" hardware=tpu)
if [ "$got" = "$want" ]; then ok; else bad "launch: remote argv differs:"$'\n'"$got"$'\n'"-- want --"$'\n'"$want"; fi
dry launch.sh train hardware=cpu
lines 8 'exec\\ \./maxtext\\ train\\ hardware=cpu$' "$OUT" "launch: a given hardware= is kept, none appended"
for t in v5p-8:1 v4-32:4 v5p-128:16 v5litepod-8:1 v5litepod-16:4 v6e-8:1 v6e-64:16; do
  EXTRA=(ACCELERATOR_TYPE="${t%:*}")
  dry launch.sh train
  lines "${t#*:}" '--worker=' "$OUT" "launch ${t%:*}: workers"
done
EXTRA=(ACCELERATOR_TYPE=v5p-8)
dry launch.sh train
lines 0 'NNODES|describe' "$OUT" "launch v5p-8: one worker, no process variables"
EXTRA=(NUM_WORKERS=3)
dry launch.sh train
lines 3 '--worker=' "$OUT" "launch: NUM_WORKERS overrides"
EXTRA=(ACCELERATOR_TYPE=tpu7x-weird)
dry launch.sh train
check "launch: unknown ACCELERATOR_TYPE without NUM_WORKERS is an error" test "$RC" != 0
lines 1 'set NUM_WORKERS' "$ERR" "launch: unknown type message"
# shellcheck disable=SC2016
EXTRA=(FORWARD_ENV="CHECK_FWD" CHECK_FWD='a b;$c')
dry launch.sh train
first=$(grep -m1 -- '--worker=0 ' <<<"$OUT" || true)
check "launch: FORWARD_ENV export precedes the exec" grep -q 'export\\ CHECK_FWD=' <<<"$first"
line=${first#+ }
eval "set -- $line"
for a in "$@"; do case $a in --command=*) cmd=${a#--command=} ;; esac; done
fwd=$(bash -c 'cd() { :; }; exec() { printf "%s" "$CHECK_FWD"; }; '"$cmd")
# shellcheck disable=SC2016
check "launch: FORWARD_ENV value reaches the worker unchanged (got '$fwd')" test "$fwd" = 'a b;$c'
EXTRA=(NUM_SLICES=2)
dry launch.sh train
lines 1 "^\+ gcloud compute tpus tpu-vm describe t-0 --project=p --zone=us-east5-a --format=value\\\\\(networkEndpoints\\\\\[0\\\\\]\.ipAddress\\\\\)$" "$OUT" "launch multislice: coordinator IP from t-0"
lines 16 '^\+ gcloud compute tpus tpu-vm ssh t-[01] ' "$OUT" "launch multislice: 16 ssh lines"
lines 8 '^\+ gcloud compute tpus tpu-vm ssh t-0 .*MEGASCALE_COORDINATOR_ADDRESS=10\.0\.0\.2:8080\\ MEGASCALE_NUM_SLICES=2\\ MEGASCALE_SLICE_ID=0\\ MEGASCALE_PORT=8080\\ ' "$OUT" "launch multislice: slice 0 env"
lines 8 '^\+ gcloud compute tpus tpu-vm ssh t-1 .*MEGASCALE_COORDINATOR_ADDRESS=10\.0\.0\.2:8080\\ MEGASCALE_NUM_SLICES=2\\ MEGASCALE_SLICE_ID=1\\ MEGASCALE_PORT=8080\\ ' "$OUT" "launch multislice: slice 1 env"
lines 1 '^\+ gcloud compute tpus tpu-vm ssh t-1 .*--worker=0 .*NNODES=16\\ NODE_RANK=8\\ ' "$OUT" "launch multislice: slice 1 worker 0 is process 8 of 16"
dry launch.sh
check "launch: no subcommand is an error" test "$RC" != 0
lines 1 'usage:' "$ERR" "launch: usage message"

echo "== missing settings and missing gcloud"
for s in create_slice.sh delete_slice.sh setup_workers.sh launch.sh; do
  argv=("./$s")
  if [ "$s" = launch.sh ]; then argv+=(train); fi
  for v in TPU_NAME PROJECT ZONE; do
    RC=0
    ERR=$(env -u "$v" "${SAMPLE[@]/#$v=*/DRY_RUN=1}" "${argv[@]}" 2>&1 >/dev/null) || RC=$?
    if [ "$RC" != 0 ] && grep -q "$v is not set" <<<"$ERR"; then ok; else bad "$s without $v: rc=$RC, '$ERR'"; fi
  done
  RC=0
  ERR=$(env TPU_NAME=t PROJECT=p ZONE=z DRY_RUN=0 GCLOUD=/nonexistent/gcloud "BINARY=$STUB" "${argv[@]}" 2>&1) || RC=$?
  if [ "$RC" != 0 ] && grep -q "not on PATH" <<<"$ERR" && ! grep -q '^+ ' <<<"$ERR"; then ok; else
    bad "$s without gcloud: rc=$RC, '$ERR'"
  fi
done

if [ "${PARSE_CHECK:-0}" = 1 ]; then
  echo "== PARSE_CHECK: the real gcloud accepts every printed command"
  command -v gcloud >/dev/null || { echo "PARSE_CHECK=1 needs gcloud on PATH" >&2; exit 2; }
  cfg=$(mktemp -d)
  all=$(
    # shellcheck disable=SC2086  # $e is a list of NAME=VALUE words
    for e in "" "SPOT=1 RESERVED=1" "BEST_EFFORT=1" "NUM_SLICES=2"; do env $e "${SAMPLE[@]}" ./create_slice.sh 2>/dev/null; done
    env YES=1 ASYNC=1 "${SAMPLE[@]}" ./delete_slice.sh
    env INTERNAL_IP=1 "${SAMPLE[@]}" ./setup_workers.sh
    env NUM_WORKERS=1 "${SAMPLE[@]}" ./launch.sh train 'a b'
    env NUM_SLICES=2 NUM_WORKERS=1 "${SAMPLE[@]}" ./launch.sh train
  )
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    eval "set -- ${line#+ }"
    msg=$(env -u CLOUDSDK_AUTH_ACCESS_TOKEN_FILE -u CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE \
      -u GOOGLE_APPLICATION_CREDENTIALS CLOUDSDK_CONFIG="$cfg" CLOUDSDK_CORE_CHECK_GCE_METADATA=false \
      CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true \
      CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU=http://127.0.0.1:9/ timeout 120 "$@" </dev/null 2>&1 || true)
    if grep -q "do not currently have an active account" <<<"$msg"; then ok; else
      bad "gcloud did not accept: ${line:0:160}"$'\n'"$msg"
    fi
  done <<<"$all"
  rm -rf "$cfg"
fi

echo "$checks checks, $failures failed"
[ "$failures" = 0 ]
