#!/usr/bin/env bash
# Hydrated and cold sequential read through a fanhsm mount vs native reads, side by side
# in one run, on one loop-mounted filesystem (cache and a native copy on the same fs).
#   bench/hydrated_read.sh [--size-mib N] [--runs N] [--fs ext4|xfs|btrfs]
# Prints a table of medians (min..max) and ratios; writes bench/results/hydrated_read.json.
# Run as root. Cleans up everything it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024; runs=5; fs=ext4
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --fs) fs=$2; shift 2 ;;
    *) echo "usage: $0 [--size-mib N] [--runs N] [--fs ext4|xfs|btrfs]" >&2; exit 2 ;;
  esac
done
fanhsm=$(pwd)/build/fanhsm
[ -x "$fanhsm" ] || bash scripts/build.sh
work=$(mktemp -d /var/tmp/fanhsm-bench.XXXXXX)
export FANHSM_RUN_DIR="$work/run"
mkdir -p "$work/fs" "$work/mnt"
cleanup() {
  set +e
  "$fanhsm" umount "$work/mnt" 2>/dev/null
  mountpoint -q "$work/fs" && umount "$work/fs"
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s $((size_mib * 3 + 1024))M "$work/img"
case "$fs" in
  ext4) mkfs.ext4 -q "$work/img" ;;
  xfs) mkfs.xfs -q "$work/img" ;;
  btrfs) mkfs.btrfs -q "$work/img" ;;
esac
mount -o loop "$work/img" "$work/fs"
mkdir -p "$work/fs/src"
echo "generating ${size_mib} MiB of random data..." >&2
head -c $((size_mib << 20)) /dev/urandom > "$work/fs/src/big"
cp "$work/fs/src/big" "$work/fs/native"   # a native file on the same fs, for comparison
sync

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Seconds for one full sequential read of $1 (1 MiB blocks).
readtime() {
  local t0 t1
  t0=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=1M status=none
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
stats() {  # prints "median min max" of the arguments
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f %.4f %.4f\n", m, a[1], a[NR]}'
}

declare -a cold_fanhsm cold_src hyd_cold native_cold hyd_warm native_warm
for i in $(seq 1 "$runs"); do
  # Cold first read: a fresh cache every run, source page cache dropped.
  rm -rf "$work/fs/cache"
  "$fanhsm" mount --cache "$work/fs/cache" "$work/fs/src" "$work/mnt" >/dev/null
  drop
  cold_fanhsm+=("$(readtime "$work/mnt/big")")
  drop
  cold_src+=("$(readtime "$work/fs/src/big")")
  # Hydrated, page cache cold: the file is full, reads raise no events.
  sleep 0.3
  drop
  hyd_cold+=("$(readtime "$work/mnt/big")")
  drop
  native_cold+=("$(readtime "$work/fs/native")")
  # Warm page cache.
  readtime "$work/mnt/big" >/dev/null; readtime "$work/fs/native" >/dev/null
  hyd_warm+=("$(readtime "$work/mnt/big")")
  native_warm+=("$(readtime "$work/fs/native")")
  events=$("$fanhsm" status --json "$work/mnt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"]["content"])')
  "$fanhsm" umount "$work/mnt"
done

row() {  # name, times...
  local name=$1; shift
  read -r med min max < <(stats "$@")
  local mibs
  mibs=$(echo "$size_mib / $med" | bc -l)
  printf '%s %.4f %.4f %.4f %.1f\n' "$name" "$med" "$min" "$max" "$mibs"
}
{
  row fanhsm_cold_first_read "${cold_fanhsm[@]}"
  row source_cat_cold "${cold_src[@]}"
  row fanhsm_hydrated_pagecache_cold "${hyd_cold[@]}"
  row native_pagecache_cold "${native_cold[@]}"
  row fanhsm_hydrated_pagecache_warm "${hyd_warm[@]}"
  row native_pagecache_warm "${native_warm[@]}"
} > "$work/rows"

python3 - "$work/rows" "$size_mib" "$runs" "$fs" "$events" <<'PY'
import json, sys, os, platform
rows = {}
for line in open(sys.argv[1]):
    n, med, mn, mx, mibs = line.split()
    rows[n] = dict(median_s=float(med), min_s=float(mn), max_s=float(mx), mib_s=float(mibs))
size, runs, fs, events = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def ratio(a, b): return rows[b]["median_s"] / rows[a]["median_s"]
out = dict(size_mib=size, runs=runs, fs=fs, kernel=platform.release(), rows=rows,
           ratios=dict(
             hydrated_vs_native_pagecache_cold=ratio("fanhsm_hydrated_pagecache_cold", "native_pagecache_cold"),
             hydrated_vs_native_pagecache_warm=ratio("fanhsm_hydrated_pagecache_warm", "native_pagecache_warm"),
             cold_first_read_vs_source_cat=ratio("fanhsm_cold_first_read", "source_cat_cold")),
           content_events_last_run=events)
os.makedirs("bench/results", exist_ok=True)
json.dump(out, open("bench/results/hydrated_read.json", "w"), indent=2)
print(f"sequential read of a {size} MiB file, {fs} on a loop device, {runs} runs (median, min..max)\n")
print("| subject | median s | min..max s | MiB/s | ratio |")
print("|---|---|---|---|---|")
lim = {"fanhsm_cold_first_read": "source_cat_cold", "fanhsm_hydrated_pagecache_cold": "native_pagecache_cold",
       "fanhsm_hydrated_pagecache_warm": "native_pagecache_warm"}
for n, r in rows.items():
    rat = f"{ratio(n, lim[n]):.3f}x of {lim[n]}" if n in lim else "limit"
    print(f"| {n} | {r['median_s']:.3f} | {r['min_s']:.3f}..{r['max_s']:.3f} | {r['mib_s']:.0f} | {rat} |")
print(f"\ncontent events in the last run (one cold read + 3 hydrated reads): {events}")
PY
