#!/usr/bin/env bash
# Copies what `maxtext` needs to every worker of the slice(s) and installs libtpu there:
#   the release binary (as REMOTE_DIR/maxtext), configs/, assets/ (if present), scripts/setup_libtpu.sh,
# with `gcloud compute tpus tpu-vm scp --worker=all`, then runs scripts/setup_libtpu.sh on all workers
# with `gcloud compute tpus tpu-vm ssh --worker=all --command=...`. Paths are relative to the repository
# root. Build the binary first (`cargo build --release`) on a system whose glibc is not newer than the
# TPU VM image's (Ubuntu 22.04 for the default runtimes), or build it on a TPU VM.
#
# Environment (see tpu/common.sh for the ones every script takes):
#   TPU_NAME, PROJECT, ZONE  required
#   NUM_SLICES               default 1 (>1: copies to every node TPU_NAME-0..N-1)
#   BINARY                   default target/release/maxtext
#   REMOTE_DIR               default ~/maxtext-rs (on each worker)
#   SKIP_ASSETS=1            do not copy assets/
#   LIBTPU_VERSION           passed to scripts/setup_libtpu.sh on the workers when set
#   INTERNAL_IP=1            connect to the workers' internal IPs
#   DRY_RUN=1                print the gcloud commands instead of running them
#
# Run `ssh-add ~/.ssh/google_compute_engine` first: gcloud asks for it when it reaches several workers.
#
# Example:
#   TPU_NAME=q3next PROJECT=my-project ZONE=us-east5-a tpu/setup_workers.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

[ $# -eq 0 ] || die "takes no arguments (everything is an environment variable; see the header of $0)."
load_slice_env
load_remote_dir
cd "$REPO_ROOT"
BINARY=${BINARY:-target/release/maxtext}
[ -f "$BINARY" ] || die "no binary at $BINARY (relative to $REPO_ROOT). Build it with 'cargo build --release'," \
  "or point BINARY at one."
[ -d configs ] || die "configs/ is missing from $REPO_ROOT."
[ -f scripts/setup_libtpu.sh ] || die "scripts/setup_libtpu.sh is missing from $REPO_ROOT."
dirs=(configs)
if [ -d assets ] && [ "${SKIP_ASSETS:-0}" != 1 ]; then dirs+=(assets); fi
require_gcloud

setup="cd $REMOTE_SH && chmod +x maxtext scripts/setup_libtpu.sh && "
if [ -n "${LIBTPU_VERSION:-}" ]; then setup+="LIBTPU_VERSION=$(printf '%q' "$LIBTPU_VERSION") "; fi
setup+="scripts/setup_libtpu.sh"

for node in "${NODES[@]}"; do
  ssh=("$GCLOUD" compute tpus tpu-vm ssh "$node" "${LOC[@]}" --worker=all "${SSH_FLAGS[@]}")
  scp=("$GCLOUD" compute tpus tpu-vm scp "${LOC[@]}" --worker=all "${SSH_FLAGS[@]}")
  run "${ssh[@]}" --command="mkdir -p $REMOTE_SH/scripts"
  run "${scp[@]}" "$BINARY" "$node:$REMOTE_SCP/maxtext"
  run "${scp[@]}" --recurse "${dirs[@]}" "$node:$REMOTE_SCP/"
  run "${scp[@]}" scripts/setup_libtpu.sh "$node:$REMOTE_SCP/scripts/"
  run "${ssh[@]}" --command="$setup"
done
if [ "$DRY_RUN" != 1 ]; then say "workers of ${NODES[*]} are ready: tpu/launch.sh <subcommand> ..."; fi
