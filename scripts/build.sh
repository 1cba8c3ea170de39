#!/usr/bin/env bash
# Builds fanhsm into build/ (RelWithDebInfo, warnings are errors). Usage: scripts/build.sh [cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFANHSM_WERROR=ON "$@" >/dev/null
ninja -C build
