#!/usr/bin/env python3
"""Eviction benchmark (issue #7): how fast content is released, and what constant eviction
costs a reader.

  python3 bench/eviction.py [--fanhsm build/fanhsm] [--files 192] [--file-mib 8] [--runs 3]

Sets up a source tree (mirror backend, on the root filesystem) and a loop-mounted ext4
image for the cache, runs, prints a table and writes bench/results/eviction.json, and
removes everything it made (also on Ctrl-C). Run as root. No assertions: figures only.

Scenarios (median of --runs, with min and max):
  release     `fanhsm release -r` of a fully hydrated tree: GiB released per second
  quota-pass  the background evictor bringing the same tree from 100% down under a quota
  steady      reading the whole tree over and over for --seconds: with a quota of half the
              tree (every pass evicts and refetches) vs without a quota (all present),
              MB/s of reads and the ratio between the two
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600, **kw)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="fanhsm-evict.", dir="/tmp")
        self.src = os.path.join(self.work, "src")
        self.img = os.path.join(self.work, "cache.img")
        self.cachefs = os.path.join(self.work, "cachefs")
        self.mp = os.path.join(self.work, "mnt")
        self.dev = None
        self.mounted = False
        os.environ["FANHSM_RUN_DIR"] = os.path.join(self.work, "run")

    def setup(self):
        rng = random.Random(1)
        for i in range(self.args.files):
            d = os.path.join(self.src, "d%02d" % (i % 16))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
                f.write(rng.randbytes(self.args.file_mib * MIB))
        os.makedirs(self.cachefs)
        os.makedirs(self.mp)
        with open(self.img, "wb") as f:
            f.truncate(self.total() * 3 + 512 * MIB)
        sh(["mkfs.ext4", "-q", self.img])
        self.dev = sh(["losetup", "--find", "--show", self.img]).stdout.strip()
        sh(["mount", self.dev, self.cachefs])

    def total(self):
        return self.args.files * self.args.file_mib * MIB

    def files(self):
        out = []
        for d, _, names in os.walk(self.mp):
            out += [os.path.join(d, n) for n in names]
        return sorted(out)

    def mount(self, *extra):
        cache = os.path.join(self.cachefs, "cache")
        sh([self.args.fanhsm, "mount", "--cache", cache, *extra, self.src, self.mp])
        self.mounted = True
        for _ in range(600):
            if self.status()["crawl"]["done"]:
                return
            time.sleep(0.05)

    def umount(self):
        if self.mounted:
            subprocess.run([self.args.fanhsm, "umount", self.mp], timeout=120)
            self.mounted = False

    def status(self):
        return json.loads(sh([self.args.fanhsm, "status", "--json", self.mp]).stdout)

    def drop_caches(self):
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    def read_all(self, paths):
        n = 0
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while True:
                    b = f.read(MIB)
                    if not b:
                        break
                    n += len(b)
        return n

    def cleanup(self):
        self.umount()
        if self.dev:
            subprocess.run(["umount", self.cachefs])
            subprocess.run(["losetup", "-d", self.dev])
        shutil.rmtree(self.work, ignore_errors=True)

    # --- scenarios ------------------------------------------------------------------

    def release(self):
        out = []
        self.mount()
        for _ in range(self.args.runs):
            sh([self.args.fanhsm, "fetch", "-r", self.mp])
            t = time.monotonic()
            r = sh([self.args.fanhsm, "release", "-r", self.mp])
            dt = time.monotonic() - t
            assert self.status()["bytes_present"] == 0, r.stdout
            out.append(self.total() / dt / (1 << 30))
        self.umount()
        return out

    def quota_pass(self):
        out = []
        quota = self.total() // 2
        for _ in range(self.args.runs):
            self.mount()
            sh([self.args.fanhsm, "fetch", "-r", self.mp])
            self.umount()
            # Remount with a quota: the first pass takes usage from 100% to the low mark.
            self.mount("--cache-size", str(quota), "--cache-high", "0.9", "--cache-low", "0.5")
            for _ in range(6000):  # bounded: 60 s
                if self.status()["eviction"]["last_pass_seconds"] > 0:
                    break
                time.sleep(0.01)
            ev = self.status()["eviction"]
            out.append(ev["last_pass_bytes"] / ev["last_pass_seconds"] / (1 << 30))
            sh([self.args.fanhsm, "release", "-r", self.mp])
            self.umount()
        return out

    def steady(self, quota):
        out = []
        extra = ["--cache-size", str(quota), "--cache-high", "0.9", "--cache-low", "0.7"] if quota else []
        self.mount(*extra)
        paths = self.files()
        if not quota:
            sh([self.args.fanhsm, "fetch", "-r", self.mp])
        for _ in range(self.args.runs):
            self.drop_caches()
            rng = random.Random(7)
            t = time.monotonic()
            n = 0
            while time.monotonic() - t < self.args.seconds:
                order = paths[:]
                rng.shuffle(order)
                n += self.read_all(order[: max(1, len(order) // 8)])
            out.append(n / (time.monotonic() - t) / 1e6)
        evicted = self.status()["eviction"]["files"]
        sh([self.args.fanhsm, "release", "-r", self.mp])
        self.umount()
        return out, evicted


def row(name, values, unit):
    return "| %s | %.2f %s | %.2f | %.2f |" % (name, statistics.median(values), unit, min(values), max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanhsm", default=os.path.join(HERE, "..", "build", "fanhsm"))
    ap.add_argument("--files", type=int, default=192)
    ap.add_argument("--file-mib", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("eviction.py: run as root (mounts, loop devices)")
    b = Bench(args)
    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        b.setup()
        rel = b.release()
        qp = b.quota_pass()
        with_quota, evicted = b.steady(b.total() // 2)
        without, _ = b.steady(0)
    finally:
        b.cleanup()
    ratio = statistics.median(with_quota) / statistics.median(without)
    lines = [
        "tree: %d files x %d MiB = %.2f GiB; cache on a loop-mounted ext4 image; load %s"
        % (args.files, args.file_mib, args.files * args.file_mib / 1024, open("/proc/loadavg").read().split()[0]),
        "",
        "| scenario | median | min | max |",
        "|---|---|---|---|",
        row("`fanhsm release -r` (content released)", rel, "GiB/s"),
        row("quota pass, 100% -> 50% (background evictor)", qp, "GiB/s"),
        row("reads with a quota of half the tree (constant eviction)", with_quota, "MB/s"),
        row("reads without a quota (all present)", without, "MB/s"),
        "",
        "steady reads under constant eviction: %.2fx of reads without eviction (%d files evicted "
        "during the last run)" % (ratio, evicted),
    ]
    print("\n".join(lines))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "eviction.json"), "w") as f:
        json.dump({"files": args.files, "file_mib": args.file_mib, "release_gib_s": rel,
                   "quota_pass_gib_s": qp, "steady_with_quota_mb_s": with_quota,
                   "steady_without_mb_s": without, "ratio": ratio, "evicted_files": evicted},
                  f, indent=1)


if __name__ == "__main__":
    main()
