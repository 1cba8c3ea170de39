#!/usr/bin/env python3
"""Scale benchmark (issue #9): a large tree through fanhsm, side by side with the native tree.

    bench/scale.py --source DIR [--http] [--reads 2000] [--stat 200000] [--cold] [--pressure]
    bench/scale.py --files 1000000            # generates the tree on its own ext4 image

The source is a tree made by bench/gen_tree.py (file contents are a function of the path,
so every read is checked). Prints one table and writes bench/results/scale.json:
entries, crawl time and entries/s, the daemon's RSS (peak during the crawl, and after)
and bytes per entry, `find | wc -l` and a stat storm on the mount vs the native tree
(warm; with --cold also after dropping the dentry/inode caches), random reads with the
frontend's per-event latency (p50/p99), inode marks held by the groups, and the remount
time of the full cache (no recrawl). --pressure also runs a reader in a memory cgroup
with vm.vfs_cache_pressure raised and checks every byte it reads.

Needs root. Everything it mounts, attaches or starts is torn down on exit, also on error.
Run it on an otherwise idle machine; ratios are measured in one run, side by side.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from gen_tree import content_of, layout  # noqa: E402

WAIT_S = 3600


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=WAIT_S, **kw)


@contextlib.contextmanager
def loop_ext4(img, mnt, size_gib, inodes, inline=False):
    with open(img, "wb") as f:
        f.truncate(size_gib << 30)
    opts = ["-q", "-N", str(inodes), "-I", "256"] + (["-O", "inline_data"] if inline else [])
    sh(["mkfs.ext4"] + opts + [img])
    dev = sh(["losetup", "--find", "--show", img]).stdout.strip()
    try:
        os.makedirs(mnt, exist_ok=True)
        sh(["mount", "-t", "ext4", dev, mnt])
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", mnt]).returncode != 0:
                time.sleep(2)
                subprocess.run(["umount", "-l", mnt])
    finally:
        subprocess.run(["losetup", "-d", dev])
        os.unlink(img)


def status(fanhsm, mp, path=None):
    r = sh([fanhsm, "status", "--json", path or mp])
    return json.loads(r.stdout.splitlines()[0])


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def inode_marks(pid):
    """Inode marks the daemon's fanotify groups hold (from /proc/PID/fdinfo)."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        with contextlib.suppress(OSError):
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[fanotify]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                n += sum(1 for line in f if line.startswith("fanotify ino:"))
    return n


def drop_caches(what=2):
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("%d\n" % what)  # 2: dentries and inodes (evictable marks go with them); 3: and pages


def timed(fn):
    t = time.monotonic()
    r = fn()
    return time.monotonic() - t, r


def find_count(root):
    p = subprocess.run("find %s | wc -l" % root, shell=True, check=True, stdout=subprocess.PIPE,
                       text=True, timeout=WAIT_S)
    return int(p.stdout.strip())


def stat_storm(root, rels):
    for r in rels:
        os.lstat(os.path.join(root, r))
    return len(rels)


def side_by_side(name, native, mounted, fn, runs, cold, results):
    """Alternates native and mounted runs; median seconds of each and their ratio."""
    tn, tm, vals = [], [], set()
    if not cold:  # warm: once through first (the mount's first walk raises one event per dir)
        fn(native)
        fn(mounted)
    for _ in range(runs):
        for root, out in ((native, tn), (mounted, tm)):
            if cold:
                drop_caches()
            dt, v = timed(lambda: fn(root))
            out.append(dt)
            vals.add(v)
    mn, mm = sorted(tn)[len(tn) // 2], sorted(tm)[len(tm) // 2]
    results[name] = {"native_s": mn, "fanhsm_s": mm, "ratio": mm / mn if mn else None,
                     "results_equal": len(vals) == 1}
    print("%-28s native %8.3f s  fanhsm %8.3f s  ratio %.2fx%s" % (
        name, mn, mm, mm / mn if mn else 0, "" if len(vals) == 1 else "  RESULTS DIFFER %s" % vals))


def read_check(root, rels, big_of):
    bad = 0
    for r in rels:
        with open(os.path.join(root, r), "rb") as f:
            if f.read() != content_of(r, big_of[r]):
                bad += 1
    return bad


READER = r"""
import os, sys
sys.path.insert(0, %r)
from gen_tree import content_of
root = sys.argv[1]
bad = 0
for line in sys.stdin:
    rel, big = line.split()
    with open(os.path.join(root, rel), "rb") as f:
        if f.read() != content_of(rel, big == "1"):
            bad += 1
print(bad)
"""


def pressure_reader(mp, rels, big_of, mem_bytes, pid):
    """Reads `rels` in a memory cgroup (v1 or v2) with vfs_cache_pressure raised."""
    cg = None
    for base, limit in (("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
                        ("/sys/fs/cgroup", "memory.max")):
        if os.path.exists(os.path.join(base, limit)) or os.path.exists(os.path.join(base, "cgroup.procs")):
            cg = os.path.join(base, "fanhsm-scale-%d" % os.getpid())
            break
    old = open("/proc/sys/vm/vfs_cache_pressure").read().strip()
    os.mkdir(cg)
    try:
        with open(os.path.join(cg, limit), "w") as f:
            f.write(str(mem_bytes))
        with open("/proc/sys/vm/vfs_cache_pressure", "w") as f:
            f.write("1000")
        marks_before = inode_marks(pid)
        procs = os.path.join(cg, "cgroup.procs")
        p = subprocess.Popen([sys.executable, "-c", READER % HERE, mp], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: open(procs, "w").write(str(os.getpid())))
        out, _ = p.communicate("".join("%s %d\n" % (r, big_of[r]) for r in rels), timeout=WAIT_S)
        marks_after = inode_marks(pid)
        drop_caches(3)  # inodes that still have cached pages are not reclaimed
        marks_dropped = inode_marks(pid)
        return {"files": len(rels), "bad": int(out.strip() or -1), "rc": p.returncode,
                "cgroup_limit": mem_bytes, "inode_marks_before": marks_before,
                "inode_marks_after": marks_after, "inode_marks_after_drop_caches": marks_dropped}
    finally:
        with open("/proc/sys/vm/vfs_cache_pressure", "w") as f:
            f.write(old)
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanhsm", default=os.path.join(HERE, "..", "build", "fanhsm"))
    ap.add_argument("--source", help="tree made by gen_tree.py (default: generate one)")
    ap.add_argument("--files", type=int, default=1000000, help="files of the tree (its layout)")
    ap.add_argument("--per-dir", type=int, default=100)
    ap.add_argument("--fanout", type=int, default=100)
    ap.add_argument("--big-every", type=int, default=1000)
    ap.add_argument("--work", default=None, help="directory for images (default: a temp dir in /tmp)")
    ap.add_argument("--http", action="store_true", help="serve the source with nginx (JSON autoindex)")
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--stat", type=int, default=200000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also measure with caches dropped")
    ap.add_argument("--pressure", action="store_true")
    ap.add_argument("--crawl-parallel", type=int, default=4)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scale.json"))
    a = ap.parse_args()
    fanhsm = os.path.abspath(a.fanhsm)
    work = tempfile.mkdtemp(prefix="fanhsm-scale.", dir=a.work or "/tmp")
    res = {"files": a.files}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        src = a.source
        if not src:
            inodes = int(a.files * 1.1) + 10000
            src = stack.enter_context(loop_ext4(os.path.join(work, "src.img"), os.path.join(work, "src"),
                                                8, inodes, inline=True))
            sh([sys.executable, os.path.join(HERE, "gen_tree.py"), src, "--files", str(a.files),
                "--per-dir", str(a.per_dir), "--fanout", str(a.fanout), "--big-every", str(a.big_every)])
        rels, big_of = [], {}
        n = 0
        for _, names in layout(a.files, a.per_dir, a.fanout):
            for r in names:
                big_of[r] = a.big_every > 0 and n % a.big_every == 0
                n += 1
                rels.append(r)
        cachefs = stack.enter_context(loop_ext4(os.path.join(work, "cache.img"), os.path.join(work, "cachefs"),
                                                8, int(a.files * 1.1) + 10000))
        source = src
        if a.http:
            from servers import web_server
            source = stack.enter_context(web_server("nginx", src, work, variant="json"))
        mp = os.path.join(work, "mnt")
        os.makedirs(mp)
        cache = os.path.join(cachefs, "cache")
        env = dict(os.environ, FANHSM_RUN_DIR=os.path.join(work, "run"))
        os.environ["FANHSM_RUN_DIR"] = env["FANHSM_RUN_DIR"]

        def mount():
            return timed(lambda: sh([fanhsm, "mount", "--cache", cache, "--crawl-parallel",
                                     str(a.crawl_parallel), source, mp]))[0]

        def umount():
            subprocess.run([fanhsm, "umount", mp], timeout=120)

        t_mount = mount()
        stack.callback(umount)
        pid = status(fanhsm, mp)["pid"]
        peak = 0
        while True:
            st = status(fanhsm, mp)
            peak = max(peak, proc_status(pid)["VmRSS"])
            if st["crawl"]["done"]:
                break
            time.sleep(0.5)
        ps = proc_status(pid)
        entries = st["files"]["total"] + st["dirs"]["total"] + st["symlinks"]
        res.update({"source": "http (nginx json)" if a.http else "local dir", "mount_s": t_mount,
                    "entries": entries, "crawl_s": st["crawl"]["seconds"],
                    "crawl_entries_per_s": st["crawl"]["entries"] / st["crawl"]["seconds"],
                    "rss_peak_crawl": peak, "vm_hwm": ps["VmHWM"], "rss_after_crawl": ps["VmRSS"],
                    "bytes_per_entry": ps["VmHWM"] / entries,
                    "index_bytes": os.path.getsize(os.path.join(cache, "meta", "index.db"))})
        print("entries %d, crawl %.1f s (%.0f entries/s), RSS peak %.1f MiB (HWM %.1f MiB), "
              "%.1f bytes/entry, index %.0f MiB" % (
                  entries, res["crawl_s"], res["crawl_entries_per_s"], peak / 2**20,
                  ps["VmHWM"] / 2**20, res["bytes_per_entry"], res["index_bytes"] / 2**20))
        meta = res["metadata"] = {}
        side_by_side("find | wc -l (warm)", src, mp, find_count, a.runs, False, meta)
        storm = random.Random(1).sample(rels, min(a.stat, len(rels)))
        side_by_side("stat %d random (warm)" % len(storm), src, mp, lambda r: stat_storm(r, storm),
                     a.runs, False, meta)
        if a.cold:
            side_by_side("find | wc -l (cold)", src, mp, find_count, a.runs, True, meta)
            side_by_side("stat %d random (cold)" % len(storm), src, mp,
                         lambda r: stat_storm(r, storm), a.runs, True, meta)
        sample = random.Random(2).sample(rels, min(a.reads, len(rels)))
        before = status(fanhsm, mp)["latency"]["content"]["count"]
        dt, bad = timed(lambda: read_check(mp, sample, big_of))
        st = status(fanhsm, mp)
        lat = st["latency"]["content"]
        res["reads"] = {"files": len(sample), "bad": bad, "seconds": dt, "events": lat["count"] - before,
                        "latency_us": lat}
        print("read %d random files: %d bad, %.2f s; content events p50 %s us, p99 %s us, max %s us" % (
            len(sample), bad, dt, lat["p50_us"], lat["p99_us"], lat["max_us"]))
        res["inode_marks_after_reads"] = inode_marks(pid)
        res["rss_after_reads"] = proc_status(pid)["VmRSS"]
        if a.pressure:
            more = random.Random(3).sample(rels, min(a.reads, len(rels)))
            res["pressure"] = pressure_reader(mp, more, big_of, 64 << 20, pid)
            print("pressure: %s" % res["pressure"])
        umount()
        t_remount = mount()
        st = status(fanhsm, mp)
        pid = st["pid"]
        dt_find, cnt = timed(lambda: find_count(mp))
        res["remount"] = {"mount_s": t_remount, "crawl_done_at_mount": st["crawl"]["done"],
                          "dirs_listed": st["crawl"]["dirs_listed"], "find_count": cnt,
                          "find_s": dt_find, "rss": proc_status(pid)["VmRSS"]}
        print("remount: ready in %.2f s, crawl done %s, %d dirs listed again, find %d names in %.1f s, RSS %.1f MiB" % (
            t_remount, st["crawl"]["done"], st["crawl"]["dirs_listed"], cnt, dt_find,
            res["remount"]["rss"] / 2**20))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
