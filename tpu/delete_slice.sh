#!/usr/bin/env bash
# Deletes the queued resource that tpu/create_slice.sh made, together with its TPU VM node(s) (--force),
# and waits until the deletion is done (ASYNC=1 returns at once instead).
#
#   gcloud compute tpus queued-resources delete QR_ID --project --zone --force [--quiet] [--async]
#
# Environment (the same as create_slice.sh):
#   TPU_NAME, PROJECT, ZONE  required
#   QR_ID                    queued resource id, default TPU_NAME-qr
#   YES=1                    do not ask for confirmation (gcloud --quiet)
#   ASYNC=1                  do not wait for the deletion to finish
#   DRY_RUN=1                print the gcloud command instead of running it
#
# Example:
#   TPU_NAME=q3next PROJECT=my-project ZONE=us-east5-a YES=1 tpu/delete_slice.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

[ $# -eq 0 ] || die "takes no arguments (everything is an environment variable; see the header of $0)."
load_slice_env
require_gcloud

cmd=("$GCLOUD" compute tpus queued-resources delete "$QR_ID" "${LOC[@]}" --force)
if [ "${YES:-0}" = 1 ]; then cmd+=(--quiet); fi
if [ "${ASYNC:-0}" = 1 ]; then cmd+=(--async); fi
run "${cmd[@]}"
if [ "$DRY_RUN" != 1 ]; then say "deleted queued resource $QR_ID and its node(s): ${NODES[*]}."; fi
