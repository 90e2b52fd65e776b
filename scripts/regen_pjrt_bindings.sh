#!/usr/bin/env bash
# Regenerates the committed PJRT bindings (src/pjrt/sys/bindings.rs, src/pjrt/sys/args.rs) from a
# plugin's pjrt_c_api.h with bindgen. Needs libclang (Debian: apt-get install libclang-dev).
#
#   scripts/regen_pjrt_bindings.sh [path/to/pjrt_c_api.h]
#
# With an argument the header is first copied to src/pjrt/sys/pjrt_c_api.h (bump it only to a header at
# least as new as the newest plugin you load: plugins reject argument structs smaller than their own).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 ]]; then
  cp "$1" src/pjrt/sys/pjrt_c_api.h
fi
# Touch the header so the build script reruns even if nothing else changed.
touch src/pjrt/sys/pjrt_c_api.h
# The build script runs before the crate is compiled; it rewrites the bindings even if some other part
# of the crate does not compile yet.
cargo check --lib --features regen-bindings || echo "note: cargo check failed (see above)" >&2
maj=$(sed -n 's/^#define PJRT_API_MAJOR \([0-9]*\)/\1/p' src/pjrt/sys/pjrt_c_api.h)
min=$(sed -n 's/^#define PJRT_API_MINOR \([0-9]*\)/\1/p' src/pjrt/sys/pjrt_c_api.h)
echo "regenerated src/pjrt/sys/{bindings,args}.rs from PJRT C API ${maj}.${min}:"
wc -l src/pjrt/sys/bindings.rs src/pjrt/sys/args.rs
