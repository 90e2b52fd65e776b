#!/usr/bin/env bash
# Creates a TPU VM slice (or, with NUM_SLICES>1, several for multislice) through a queued resource, then
# waits until the queued resource is ACTIVE; stops with an error if it turns FAILED or SUSPENDED or does
# not become ACTIVE within TIMEOUT_S.
#
#   gcloud compute tpus queued-resources create QR_ID --node-id=TPU_NAME (or --node-count=N
#     --node-prefix=TPU_NAME: nodes TPU_NAME-0..N-1) --project --zone --accelerator-type --runtime-version
#
# Environment (see tpu/common.sh for the ones every script takes):
#   TPU_NAME, PROJECT, ZONE  required
#   ACCELERATOR_TYPE         default v5p-64
#   RUNTIME_VERSION          default by generation: v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite,
#                            v6e v2-alpha-tpuv6e, others tpu-ubuntu2204-base
#   NUM_SLICES               default 1
#   QR_ID                    queued resource id, default TPU_NAME-qr
#   SPOT=1                   Spot capacity (--spot)
#   BEST_EFFORT=1            best-effort tier (--best-effort; only in `gcloud alpha`, which this then uses)
#   RESERVED=1               reserved capacity (--reserved)
#   CREATE_FLAGS             more flags for the create command, split on spaces (e.g. "--internal-ips
#                            --subnetwork=my-subnet")
#   TIMEOUT_S, POLL_S        how long to wait for ACTIVE (default 3600) and how often to ask (default 30)
#   DRY_RUN=1                print the gcloud commands instead of running them
#
# Example:
#   TPU_NAME=q3next PROJECT=my-project ZONE=us-east5-a ACCELERATOR_TYPE=v5p-64 SPOT=1 tpu/create_slice.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

[ $# -eq 0 ] || die "takes no arguments (everything is an environment variable; see the header of $0)."
load_slice_env
RUNTIME_VERSION=${RUNTIME_VERSION:-$(default_runtime "$ACCELERATOR_TYPE")}
TIMEOUT_S=${TIMEOUT_S:-3600}
POLL_S=${POLL_S:-30}
is_count "$TIMEOUT_S" || die "TIMEOUT_S must be a positive number of seconds, not '$TIMEOUT_S'."
is_count "$POLL_S" || die "POLL_S must be a positive number of seconds, not '$POLL_S'."
require_gcloud

create=("$GCLOUD")
tier=()
if [ "${SPOT:-0}" = 1 ] && [ "${BEST_EFFORT:-0}" = 1 ]; then
  die "SPOT=1 and BEST_EFFORT=1 are different tiers; set only one."
fi
if [ "${SPOT:-0}" = 1 ]; then tier+=(--spot); fi
if [ "${BEST_EFFORT:-0}" = 1 ]; then
  create+=(alpha)
  tier+=(--best-effort)
fi
if [ "${RESERVED:-0}" = 1 ]; then tier+=(--reserved); fi
extra=()
if [ -n "${CREATE_FLAGS:-}" ]; then read -r -a extra <<<"$CREATE_FLAGS"; fi

create+=(compute tpus queued-resources create "$QR_ID")
if ((NUM_SLICES > 1)); then
  create+=(--node-count="$NUM_SLICES" --node-prefix="$TPU_NAME")
else
  create+=(--node-id="$TPU_NAME")
fi
create+=("${LOC[@]}" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" "${tier[@]}" "${extra[@]}")

describe=("$GCLOUD" compute tpus queued-resources describe "$QR_ID" "${LOC[@]}")

run "${create[@]}"

if [ "$DRY_RUN" = 1 ]; then
  show_cmd "${describe[@]}" --format='value(state.state)'
  say "DRY_RUN: would repeat the describe every ${POLL_S}s until ACTIVE (error on FAILED/SUSPENDED, timeout ${TIMEOUT_S}s)."
  exit 0
fi

say "waiting for queued resource $QR_ID to become ACTIVE (every ${POLL_S}s, at most ${TIMEOUT_S}s):"
show_cmd "${describe[@]}" --format='value(state.state)' >&2
start=$SECONDS
while :; do
  if ! state=$("${describe[@]}" --format='value(state.state)'); then
    state="(describe failed)"
  fi
  elapsed=$((SECONDS - start))
  case $state in
    ACTIVE)
      say "ACTIVE after ${elapsed}s: ${NODES[*]} ($ACCELERATOR_TYPE, $RUNTIME_VERSION)."
      say "next: tpu/setup_workers.sh, then tpu/launch.sh <subcommand> ...; tpu/delete_slice.sh when done."
      exit 0
      ;;
    FAILED | SUSPENDING | SUSPENDED)
      "${describe[@]}" --format='yaml(state)' >&2 || true
      die "queued resource $QR_ID is $state. Delete it with tpu/delete_slice.sh (same environment) and retry," \
        "perhaps in another zone or tier (SPOT=1, RESERVED=1)."
      ;;
  esac
  if ((elapsed >= TIMEOUT_S)); then
    die "queued resource $QR_ID is still '$state' after ${elapsed}s. It stays queued: check it with" \
      "'${describe[*]}', wait longer (TIMEOUT_S), or remove it with tpu/delete_slice.sh."
  fi
  say "state: ${state:-(none yet)} (${elapsed}s)"
  sleep "$POLL_S"
done
