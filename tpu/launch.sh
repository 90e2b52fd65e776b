#!/usr/bin/env bash
# Runs the same `maxtext SUBCOMMAND ARGS...` on every worker of the slice(s), one background
# `gcloud compute tpus tpu-vm ssh NODE --worker=I --command='cd REMOTE_DIR && exec ./maxtext ARGS...'`
# per worker, each streaming its output to a log file of its own:
#   logs/TPU_NAME/<UTC time>/worker-I.log            (one slice)
#   logs/TPU_NAME/<UTC time>/slice-S-worker-I.log    (NUM_SLICES>1)
# Worker 0's log is also shown on the terminal. Waits for all, prints each worker's exit status and exits
# non-zero if any failed. `hardware=tpu` is appended unless the arguments hold a hardware= key. Run
# tpu/setup_workers.sh first. Ctrl-C stops the local ssh sessions; the remote processes may outlive them.
#
# With more than one worker in all, each worker's process learns its place in the run from the variables
# maxtext reads when num_processes / process_id / coordinator_address are not given:
#   NNODES=<workers in all>, NODE_RANK=<slice * workers per slice + worker>,
#   JAX_COORDINATOR_ADDRESS=<internal IP of worker 0 of the first node>:COORDINATOR_PORT (default 8476)
# With NUM_SLICES>1 it runs on every node TPU_NAME-0..N-1 and also exports the megascale variables:
#   MEGASCALE_COORDINATOR_ADDRESS=<the same IP>:MEGASCALE_PORT,
#   MEGASCALE_NUM_SLICES, MEGASCALE_SLICE_ID, MEGASCALE_PORT (default 8080)
# The IP comes from `gcloud compute tpus tpu-vm describe NODE --format='value(networkEndpoints[0].ipAddress)'`
# (10.0.0.2 under DRY_RUN).
#
# Arguments: SUBCOMMAND ARGS... as for ./maxtext (paths relative to REMOTE_DIR on the workers).
# Environment (see tpu/common.sh for the ones every script takes):
#   TPU_NAME, PROJECT, ZONE  required
#   ACCELERATOR_TYPE         default v5p-64; gives the worker count per slice:
#                            v2/v3/v4/v5p-N: N/8 (at least 1); v5litepod/v5e/v6e-N: 1 up to N=8, else N/4
#   NUM_WORKERS              workers per slice, overrides the count from ACCELERATOR_TYPE
#   NUM_SLICES               default 1
#   MEGASCALE_PORT           default 8080
#   COORDINATOR_PORT         default 8476 (the maxtext coordinator on worker 0)
#   REMOTE_DIR               default ~/maxtext-rs
#   FORWARD_ENV              names of local variables to export on the workers, e.g. "RUST_LOG LIBTPU_INIT_ARGS"
#   LOG_DIR                  default logs/TPU_NAME/<UTC time> (relative to the repository root)
#   INTERNAL_IP=1            connect to the workers' internal IPs
#   DRY_RUN=1                print the gcloud commands instead of running them
#
# Example:
#   TPU_NAME=q3next PROJECT=my-project ZONE=us-east5-a ACCELERATOR_TYPE=v5p-8 \
#     tpu/launch.sh train configs/base.yml model_name=qwen3-next-80b-a3b steps=5 dataset_type=synthetic
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

[ $# -ge 1 ] || die "usage: $0 SUBCOMMAND [ARGS...], e.g. $0 train configs/base.yml model_name=qwen3-next-80b-a3b"
load_slice_env
load_remote_dir
cd "$REPO_ROOT"

if [ -z "${NUM_WORKERS:-}" ]; then
  NUM_WORKERS=$(workers_for_type "$ACCELERATOR_TYPE") ||
    die "cannot tell the workers per slice of ACCELERATOR_TYPE=$ACCELERATOR_TYPE; set NUM_WORKERS."
fi
is_count "$NUM_WORKERS" || die "NUM_WORKERS must be a positive integer, not '$NUM_WORKERS'."
MEGASCALE_PORT=${MEGASCALE_PORT:-8080}
is_count "$MEGASCALE_PORT" || die "MEGASCALE_PORT must be a port number, not '$MEGASCALE_PORT'."
COORDINATOR_PORT=${COORDINATOR_PORT:-8476}
is_count "$COORDINATOR_PORT" || die "COORDINATOR_PORT must be a port number, not '$COORDINATOR_PORT'."
TOTAL_WORKERS=$((NUM_SLICES * NUM_WORKERS))
require_gcloud

args=("$@")
has_hardware=0
for a in "$@"; do
  if [[ $a == hardware=* ]]; then has_hardware=1; fi
done
if [ "$has_hardware" = 0 ]; then args+=(hardware=tpu); fi

forward=()
read -r -a forward_names <<<"${FORWARD_ENV:-}"
for name in "${forward_names[@]}"; do
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "FORWARD_ENV: '$name' is not a variable name."
  [ -n "${!name+set}" ] || die "FORWARD_ENV names $name, which is not set here."
  forward+=("$name=${!name}")
done

coordinator=
if ((TOTAL_WORKERS > 1)); then
  describe=("$GCLOUD" compute tpus tpu-vm describe "${NODES[0]}" "${LOC[@]}"
    --format='value(networkEndpoints[0].ipAddress)')
  if [ "$DRY_RUN" = 1 ]; then
    show_cmd "${describe[@]}"
    coordinator=10.0.0.2
  else
    show_cmd "${describe[@]}" >&2
    coordinator=$("${describe[@]}") || die "could not describe ${NODES[0]}: is the slice ACTIVE (tpu/create_slice.sh)?"
    [ -n "$coordinator" ] || die "${NODES[0]} reports no internal IP for worker 0; is it ACTIVE?"
  fi
fi

# remote_command SLICE WORKER: the shell command line that worker of that slice runs.
remote_command() {
  local env=("${forward[@]}")
  if ((TOTAL_WORKERS > 1)); then
    env+=("NNODES=$TOTAL_WORKERS" "NODE_RANK=$(($1 * NUM_WORKERS + $2))" "JAX_COORDINATOR_ADDRESS=$coordinator:$COORDINATOR_PORT")
  fi
  if ((NUM_SLICES > 1)); then
    env+=("MEGASCALE_COORDINATOR_ADDRESS=$coordinator:$MEGASCALE_PORT" "MEGASCALE_NUM_SLICES=$NUM_SLICES"
      "MEGASCALE_SLICE_ID=$1" "MEGASCALE_PORT=$MEGASCALE_PORT")
  fi
  local c="cd $REMOTE_SH && "
  if ((${#env[@]} > 0)); then c+="export$(printf ' %q' "${env[@]}") && "; fi
  c+="exec ./maxtext$(printf ' %q' "${args[@]}")"
  printf '%s' "$c"
}

if [ "$DRY_RUN" != 1 ]; then
  LOG_DIR=${LOG_DIR:-logs/$TPU_NAME/$(date -u +%Y%m%dT%H%M%SZ)}
  mkdir -p "$LOG_DIR"
  say "$((NUM_SLICES * NUM_WORKERS)) workers; logs in $(cd "$LOG_DIR" && pwd)"
  set -m # each ssh in a process group of its own, so that an interrupt can stop it with its children
fi

pids=()
labels=()
logs=()
stop() {
  local p
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  if [ -n "${follow:-}" ]; then kill "$follow" 2>/dev/null || true; fi
  echo "$PROG: interrupted; stopped the local ssh sessions (the remote processes may still run)." >&2
  exit 130
}
trap stop INT TERM

for ((s = 0; s < ${#NODES[@]}; s++)); do
  node=${NODES[s]}
  for ((w = 0; w < NUM_WORKERS; w++)); do
    remote=$(remote_command "$s" "$w")
    cmd=("$GCLOUD" compute tpus tpu-vm ssh "$node" "${LOC[@]}" --worker="$w" "${SSH_FLAGS[@]}" --command="$remote")
    if [ "$DRY_RUN" = 1 ]; then
      show_cmd "${cmd[@]}"
      continue
    fi
    if ((NUM_SLICES > 1)); then log=$LOG_DIR/slice-$s-worker-$w.log; else log=$LOG_DIR/worker-$w.log; fi
    if [ "$s" = 0 ] && [ "$w" = 0 ]; then show_cmd "${cmd[@]}" >&2; fi
    "${cmd[@]}" </dev/null >"$log" 2>&1 &
    pids+=("$!")
    labels+=("$node worker $w")
    logs+=("$log")
  done
done
[ "$DRY_RUN" = 1 ] && exit 0

tail -n +1 -f "${logs[0]}" &
follow=$!

failed=0
statuses=()
for i in "${!pids[@]}"; do
  if wait "${pids[i]}"; then rc=0; else rc=$?; fi
  statuses+=("$rc")
  if [ "$rc" != 0 ]; then failed=$((failed + 1)); fi
done
kill "$follow" 2>/dev/null || true
wait "$follow" 2>/dev/null || true
trap - INT TERM

echo "---- exit status per worker (logs in $LOG_DIR) ----"
for i in "${!pids[@]}"; do
  printf '%-40s exit %-4s %s\n' "${labels[i]}" "${statuses[i]}" "${logs[i]}"
done
if ((failed > 0)); then
  echo "$PROG: $failed of ${#pids[@]} workers failed; see their logs." >&2
  exit 1
fi
say "all ${#pids[@]} workers exited 0."
