#!/usr/bin/env bash
# Shared by tpu/create_slice.sh, delete_slice.sh, setup_workers.sh and launch.sh; sourced, not run.
# Reads the slice environment they all take, checks it, and runs gcloud (or, with DRY_RUN=1, prints what
# it would run, one command a line, prefixed "+ ", each argument quoted so that the line can be pasted).
#
#   TPU_NAME          node id of the slice (required); with NUM_SLICES>1 the nodes are TPU_NAME-0..N-1
#   PROJECT, ZONE     GCP project and zone (required)
#   ACCELERATOR_TYPE  default v5p-64
#   NUM_SLICES        default 1 (>1: multislice, one queued resource with N nodes)
#   QR_ID             queued resource id, default TPU_NAME-qr
#   INTERNAL_IP=1     ssh/scp to the workers' internal IPs (when running from a VM in the same VPC)
#   GCLOUD            the gcloud to run, default gcloud (from PATH)
#   DRY_RUN=1         print the commands instead of running them; gcloud need not be installed
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source this
set -euo pipefail

PROG=${PROG:-$(basename "$0")}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}
say() { echo "$PROG: $*" >&2; }

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  die "bash 4.4 or newer is needed (this is $BASH_VERSION; on macOS: brew install bash)"
fi

DRY_RUN=${DRY_RUN:-0}
GCLOUD=${GCLOUD:-gcloud}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# require NAME HINT: dies with HINT unless $NAME is set and not empty.
require() {
  [ -n "${!1:-}" ] || die "$1 is not set. $2"
}

# require_gcloud: gcloud must be on PATH, unless DRY_RUN=1.
require_gcloud() {
  [ "$DRY_RUN" = 1 ] && return 0
  command -v "$GCLOUD" >/dev/null 2>&1 ||
    die "'$GCLOUD' is not on PATH. Install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)," \
      "then 'gcloud auth login'; or set DRY_RUN=1 to print the commands without running them."
}

# show_cmd ARG...: the "+ cmd" line for a command.
show_cmd() {
  local line
  line=$(printf ' %q' "$@")
  echo "+${line}"
}

# run ARG...: runs the command (echoing it to stderr first), or with DRY_RUN=1 prints it to stdout.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    show_cmd "$@"
    return 0
  fi
  show_cmd "$@" >&2
  "$@"
}

# is_count VALUE: a positive integer.
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

# workers_for_type TYPE: hosts (TPU VM workers) in one slice of TYPE; fails for a type it does not know.
#   v2/v3/v4/v5p-N: N counts TensorCores, 8 per host (4 chips of 2 cores)  -> N/8, at least 1
#   v5litepod/v5e/v6e-N: N counts chips; up to 8 chips is one host, beyond that 4 chips per host -> N/4
workers_for_type() {
  local t=$1 n=${1##*-}
  [[ $n =~ ^[0-9]+$ ]] || return 1
  case $t in
    v2-* | v3-* | v4-* | v5p-*) echo $((n >= 8 ? n / 8 : 1)) ;;
    v5litepod-* | v5e-* | v6e-*) echo $((n > 8 ? n / 4 : 1)) ;;
    *) return 1 ;;
  esac
}

# default_runtime TYPE: the TPU VM software version Google documents for the generation.
default_runtime() {
  case $1 in
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# load_slice_env: checks the common variables and sets NODES (node names), LOC (--project/--zone) and
# SSH_FLAGS (extra flags for tpu-vm ssh/scp).
load_slice_env() {
  require TPU_NAME "Set it to the TPU VM node id, e.g. TPU_NAME=my-v5p-64."
  require PROJECT "Set it to the GCP project, e.g. PROJECT=\$(gcloud config get-value project)."
  require ZONE "Set it to the zone of the slice, e.g. ZONE=us-east5-a."
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5p-64}
  NUM_SLICES=${NUM_SLICES:-1}
  QR_ID=${QR_ID:-$TPU_NAME-qr}
  is_count "$NUM_SLICES" || die "NUM_SLICES must be a positive integer, not '$NUM_SLICES'."
  NODES=()
  if ((NUM_SLICES > 1)); then
    local s
    for ((s = 0; s < NUM_SLICES; s++)); do NODES+=("$TPU_NAME-$s"); done
  else
    NODES=("$TPU_NAME")
  fi
  LOC=(--project="$PROJECT" --zone="$ZONE")
  SSH_FLAGS=()
  if [ "${INTERNAL_IP:-0}" = 1 ]; then SSH_FLAGS+=(--internal-ip); fi
}

# load_remote_dir: checks REMOTE_DIR (default ~/maxtext-rs) and sets REMOTE_SH (for a remote shell: a
# leading ~ stays unquoted so that it expands) and REMOTE_SCP (for an scp destination: home-relative).
load_remote_dir() {
  REMOTE_DIR=${REMOTE_DIR:-"~/maxtext-rs"}
  [[ $REMOTE_DIR =~ ^[A-Za-z0-9_./~+-]+$ ]] ||
    die "REMOTE_DIR='$REMOTE_DIR' has characters these scripts do not quote for scp; use letters, digits, _ . / ~ + -."
  REMOTE_SH=$REMOTE_DIR
  # shellcheck disable=SC2088  # a literal ~/ is what is matched and stripped
  case $REMOTE_DIR in
    "~") REMOTE_SCP=. ;;
    "~/"*) REMOTE_SCP=${REMOTE_DIR#"~/"} ;;
    "~"*) die "REMOTE_DIR='$REMOTE_DIR': only ~/ (your own home) is supported, not ~user." ;;
    *) REMOTE_SCP=$REMOTE_DIR ;;
  esac
}
