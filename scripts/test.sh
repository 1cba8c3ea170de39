#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds with -Werror, runs unit and
# integration tests (real mounts on loop-mounted ext4, xfs and btrfs), the unit tests
# again under AddressSanitizer + UndefinedBehaviorSanitizer, and every libFuzzer target
# for a bounded time. Ends with "N passed, M failed". Run as root.
#   FUZZ_SECONDS=N   time per fuzz target (default 30)
set -uo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${FUZZ_SECONDS:-30}
jobs=$(nproc)
passed=0
failed=0
failures=()

count_ctest() {  # $1 = label of the phase, $2 = ctest log
  local line p t
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$2" | tail -1)
  if [ -z "$line" ]; then
    echo "test.sh: $1: no ctest summary" >&2
    failed=$((failed + 1)); failures+=("$1: ctest did not run"); return
  fi
  t=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed.*/\1/')
  passed=$((passed + t - f)); failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("$1: $f failed (see above)")
}

bash scripts/install-deps.sh || { echo "test.sh: installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }

echo "== build (RelWithDebInfo, -Werror)"
if cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFANHSM_WERROR=ON >/dev/null &&
   ninja -C build -j"$jobs"; then
  echo "== unit and integration tests"
  ctest --test-dir build --output-on-failure --timeout 900 2>&1 | tee build/ctest.log
  count_ctest "tests" build/ctest.log
else
  failed=$((failed + 1)); failures+=("build failed")
fi

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
if cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFANHSM_WERROR=ON \
     -DFANHSM_SANITIZE=ON -DFANHSM_UNIT_ONLY=ON >/dev/null && ninja -C build-asan -j"$jobs"; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan -L unit --output-on-failure 2>&1 | tee build-asan/ctest.log
  count_ctest "sanitizers" build-asan/ctest.log
else
  failed=$((failed + 1)); failures+=("sanitizer build failed")
fi

echo "== fuzz targets, ${fuzz_seconds}s each"
if CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
     -DFANHSM_FUZZ=ON -DFANHSM_UNIT_ONLY=ON >/dev/null && ninja -C build-fuzz -j"$jobs"; then
  while IFS='=' read -r name corpus; do
    [ -n "$name" ] || continue
    work=$(mktemp -d)
    # Seed files may share names (page.html): keep them all.
    [ -n "$corpus" ] && [ -d "$corpus" ] && find "$corpus" -type f -size -1M -exec cp --backup=numbered {} "$work/" \; 2>/dev/null
    if (cd build-fuzz && "./$name" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
          -print_final_stats=1 "$work" > "$name.log" 2>&1); then
      echo "fuzz $name: ok ($(grep -m1 -Eo 'stat::number_of_executed_units: *[0-9]+' "build-fuzz/$name.log" | grep -Eo '[0-9]+$') runs)"
      passed=$((passed + 1))
    else
      echo "fuzz $name: FAILED"; tail -40 "build-fuzz/$name.log"
      failed=$((failed + 1)); failures+=("fuzz $name")
    fi
    rm -rf "$work"
  done < build-fuzz/fuzzers.txt
else
  failed=$((failed + 1)); failures+=("fuzz build failed")
fi

for f in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
