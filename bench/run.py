#!/usr/bin/python3
"""The fanhsm benchmark harness (issue #5). As root, from anywhere:

    bench/run.py [--quick | --full] [--runs N] [--no-build] [--only a,b] [--out DIR]

Builds fanhsm in Release mode (build-release/), makes a loop-mounted ext4 image (the cache
filesystem, with native copies of the data for the native limit) and a tmpfs of generated
data served by nginx on 127.0.0.1 (plain, and at a limited rate), then runs every scenario
side by side for each subject: native reads, curl, fanhsm (fanotify), fanhsm (FUSE),
rclone mount :http: --vfs-cache-mode full, HTTPDirFS --cache. Writes bench/results/latest.md,
latest.json and latest-*.png. Everything it starts is stopped by pid on exit, error, Ctrl-C
or SIGTERM. --quick: small data, a few minutes; default: 1 GiB file, 100,000 entries;
--full: also the 1,000,000-entry mount, 5 runs.
"""
import argparse
import os
import platform
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import contextlib
import json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from servers import web_server  # noqa: E402
from harness import data, report, subjects as subj  # noqa: E402
from harness.env import (GIB, MIB, Cleanup, drop_caches, log, mount_ext4_image, mount_tmpfs, sh,  # noqa: E402
                         timed, wait_until)
from harness.report import Scenario  # noqa: E402


class Params:
    def __init__(self, mode, runs):
        self.mode = mode
        big = mode != "quick"
        self.big_mib = 1024 if big else 256
        self.small_files = 10000 if big else 2000
        self.tree_entries = 100000 if big else 20000
        self.huge_entries = 1000000 if mode == "full" else 0
        self.tar_mib = 400 if big else 64
        self.zip_mib = 96 if big else 32
        self.rate = "50m"
        self.runs = runs or (5 if mode == "full" else 3)
        self.fio_seconds = 5 if big else 3
        self.ranges = 1000 if big else 300


class Ctx:
    pass


def build():
    log("building fanhsm (Release) in build-release/ ...")
    b = os.path.join(ROOT, "build-release")
    sh(["cmake", "-S", ROOT, "-B", b, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"], timeout=600)
    sh(["ninja", "-C", b, "fanhsm"], timeout=3000)
    return os.path.join(b, "fanhsm")


# ---- measurements ------------------------------------------------------------------------

def read_file(path):
    return timed(["dd", "if=" + path, "of=/dev/null", "bs=1M"], timeout=1800)


def fio_rand(path, seconds):
    out = sh(["fio", "--name=rand4k", "--filename=" + path, "--rw=randread", "--bs=4k", "--ioengine=psync",
              "--runtime=%d" % seconds, "--time_based", "--invalidate=0", "--readonly", "--output-format=json"],
             timeout=seconds + 300).stdout
    return json.loads(out[out.index(b"{"):])["jobs"][0]["read"]["iops"]


def walk_read(root):
    return timed("find %s -type f -exec cat {} + > /dev/null" % root, timeout=1800)


def find_stat(root):
    return timed("find %s -printf '%%s %%T@ %%m\\n' > /dev/null" % root, timeout=1800)


def first_line(cmd, timeout=300):
    """Seconds until cmd prints its first line; then its whole session is stopped."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(p.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError("no output from %s after %ss" % (cmd, timeout))
            line = p.stdout.readline()
        dt = time.monotonic() - t
        if not line:
            raise RuntimeError("%s printed nothing (exit %s)" % (cmd, p.wait(10)))
        return dt
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        p.stdout.close()


def curl_config(path, entries):
    """A curl config doing one transfer per (url, range) entry over one connection."""
    with open(path, "w") as f:
        for i, (url, rng) in enumerate(entries):
            f.write('%surl = "%s"\noutput = "/dev/null"\n' % ("next\n" if i else "", url))
            if rng:
                f.write('range = "%s"\n' % rng)
    return path


def curl_k(cfg):
    return timed(["curl", "-s", "-f", "-K", cfg], timeout=1800)


class Runner:
    def __init__(self, ctx, p, mounts, only):
        self.ctx, self.p, self.mounts, self.only = ctx, p, mounts, only
        self.scenarios = []

    def scenario(self, *a, **kw):
        s = Scenario(*a, **kw)
        self.scenarios.append(s)
        return s

    def want(self, block):
        return not self.only or block in self.only

    def attempt(self, scn, subject, fn):
        """Runs one measurement; a failure is recorded in the table and the run goes on."""
        try:
            return fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a broken peer must not stop the run
            log("%s / %s failed: %s" % ([s.key for s in scn] if isinstance(scn, list) else scn.key, subject, e))
            for s in scn if isinstance(scn, list) else [scn]:
                s.fail(subject, e)
            return None

    @contextlib.contextmanager
    def mounted(self, cls, url):
        """A fresh mount of cls; with --settle, fanhsm's background crawl has finished first,
        so that content-cold figures do not include its competition."""
        with cls(self.ctx, url) as m:
            if self.ctx.settle:
                wait_until(m.namespace_done, 900, m.name + " crawl", interval=0.2)
            yield m

    def daemon_cpu(self, m, fn):
        c0 = m.cpu_seconds()
        r = fn()
        return r, m.cpu_seconds() - c0

    # ---- 1 GiB file: cold and hydrated sequential, random 4 KiB ----
    def big_file(self):
        p, c = self.p, self.ctx
        gib = p.big_mib * MIB / GIB
        cold = self.scenario("cold_seq", "cold sequential read, %d MiB" % p.big_mib, "MiB/s", "higher", "curl")
        hc = self.scenario("hyd_seq_pc_cold", "hydrated sequential read, page cache cold", "MiB/s", "higher",
                           "native", hydrated=True)
        hw = self.scenario("hyd_seq_pc_warm", "hydrated sequential read, page cache warm", "MiB/s", "higher",
                           "native", hydrated=True)
        rh = self.scenario("rand4k_hyd", "random 4 KiB reads (fio, %d s), hydrated, page cache cold" % p.fio_seconds,
                           "IOPS", "higher", "native", hydrated=True)
        rc = self.scenario("rand4k_cold", "random 4 KiB reads (fio, %d s), cold" % p.fio_seconds, "IOPS", "higher",
                           "curl", note="curl limit: %d random 4 KiB range GETs over one connection "
                           "(curl -K with --next)" % p.ranges)
        native = os.path.join(c.native, "big.bin")
        rng = random.Random(1)
        blocks = p.big_mib * MIB // 4096
        cfg = curl_config(os.path.join(c.work, "ranges.curl"),
                          [(c.url + "big.bin", "%d-%d" % (b * 4096, b * 4096 + 4095))
                           for b in (rng.randrange(blocks) for _ in range(p.ranges))])
        for run in range(p.runs):
            log("big file: run %d/%d" % (run + 1, p.runs))
            drop_caches()
            self.attempt(cold, "curl", lambda: cold.add(
                "curl", p.big_mib / timed(["curl", "-s", "-f", "-o", "/dev/null", c.url + "big.bin"], timeout=1800)))
            self.attempt(rc, "curl", lambda: rc.add("curl", p.ranges / curl_k(cfg)))
            def limit():
                """Native samples next to each subject's, so both see the same load."""
                drop_caches()
                hc.add("native", p.big_mib / read_file(native))
                read_file(native)
                hw.add("native", p.big_mib / read_file(native))
                drop_caches()
                rh.add("native", fio_rand(native, p.fio_seconds))
            for cls in self.mounts:
                k = cls.key
                limit()

                def seq(m):
                    f = m.path("big.bin")
                    drop_caches()
                    t, cpu = self.daemon_cpu(m, lambda: read_file(f))
                    cold.add(k, p.big_mib / t, cpu / gib)
                    time.sleep(0.5)  # let the last fill be recorded (ignore mark, state)
                    drop_caches()
                    t, cpu = self.daemon_cpu(m, lambda: read_file(f))
                    hc.add(k, p.big_mib / t, cpu / gib)
                    read_file(f)
                    hw.add(k, p.big_mib / read_file(f))
                    drop_caches()
                    rh.add(k, fio_rand(f, p.fio_seconds))

                def fresh(fn):
                    with self.mounted(cls, c.url) as m:
                        fn(m)
                self.attempt([cold, hc, hw, rh], k, lambda: fresh(seq))

                def rand_cold(m):
                    drop_caches()
                    rc.add(k, fio_rand(m.path("big.bin"), p.fio_seconds))
                self.attempt(rc, k, lambda: fresh(rand_cold))

    # ---- 10,000 small files walked and read ----
    def small_files(self):
        p, c = self.p, self.ctx
        sc = self.scenario("small_cold", "walk + read %d small files, cold" % p.small_files, "s", "lower", "curl",
                           note="curl limit: every file in one curl process, one connection")
        sh_ = self.scenario("small_hyd", "walk + read %d small files, hydrated, page cache cold" % p.small_files,
                            "s", "lower", "native", hydrated=True)
        www = os.path.join(c.www, "small")
        if any(cls.slow_listing for cls in self.mounts):
            sc.note += "; HTTPDirFS takes minutes here: its rows are one run"
        files = sorted(os.path.relpath(os.path.join(d, n), c.www) for d, _, fs in os.walk(www) for n in fs)
        cfg = curl_config(os.path.join(c.work, "small.curl"), [(c.url + f, None) for f in files])
        for run in range(p.runs):
            log("small files: run %d/%d" % (run + 1, p.runs))
            self.attempt(sc, "curl", lambda: sc.add("curl", curl_k(cfg)))
            for cls in self.mounts:
                if cls.slow_listing and run:
                    continue
                drop_caches()
                sh_.add("native", walk_read(os.path.join(c.native, "small")))
                def body(cls=cls):
                    with self.mounted(cls, c.url) as m:
                        drop_caches()
                        sc.add(cls.key, walk_read(m.path("small")))
                        time.sleep(0.5)
                        drop_caches()
                        sh_.add(cls.key, walk_read(m.path("small")))
                self.attempt([sc, sh_], cls.key, body)

    # ---- find + stat over the entry tree; mount time and RSS ----
    def tree(self):
        p, c = self.p, self.ctx
        n = "%dk" % (p.tree_entries // 1000)
        fc = self.scenario("find_cold", "find + stat, %s entries, fresh mount" % n, "s", "lower", "native",
                           note="native limit: find on the ext4 copy with the page cache dropped")
        fl = self.scenario("find_listed", "find + stat, %s entries, listed, page cache cold" % n, "s", "lower",
                           "native", hydrated=True)
        mt = self.scenario("mount_time_" + n, "mount time, %s entries" % n, "s", "lower",
                           note="no limit: time until the mount command returns (peers: until mounted)")
        rss = self.scenario("rss_" + n, "daemon RSS after the whole %s tree is known" % n, "MiB", "lower",
                            note="no limit; fanhsm after its crawl and a find, peers after a find")
        if any(cls.slow_listing for cls in self.mounts):
            fc.note += "; HTTPDirFS lists slowly: its tree rows are one run"
        crawl = {}
        for run in range(p.runs):
            log("tree: run %d/%d" % (run + 1, p.runs))
            drop_caches()
            fc.add("native", find_stat(os.path.join(c.native, "tree")))
            drop_caches()
            fl.add("native", find_stat(os.path.join(c.native, "tree")))
            for cls in self.mounts:
                if cls.slow_listing and run:
                    continue
                def body(cls=cls):
                    k = cls.key
                    t0 = time.monotonic()
                    with cls(c, c.url) as m:
                        mt.add(k, m.mount_seconds)
                        fc.add(k, find_stat(m.path("tree")))
                        wait_until(m.namespace_done, 900, m.name + " namespace", interval=0.2)
                        crawl.setdefault(k, []).append(round(time.monotonic() - t0, 2))
                        drop_caches()
                        fl.add(k, find_stat(m.path("tree")))
                        rss.add(k, m.rss_kib() / 1024)
                self.attempt([fc, fl, mt, rss], cls.key, body)
        mt.extra["seconds_until_whole_namespace_known"] = crawl

    def huge_tree(self):
        p, c = self.p, self.ctx
        n = "%dk" % (p.huge_entries // 1000)
        mt = self.scenario("mount_time_" + n, "mount time, %s entries" % n, "s", "lower",
                           note="no limit; one run")
        ns = self.scenario("namespace_" + n, "time until all %s entries are known (fanhsm: crawl; peers: find)" % n,
                           "s", "lower", note="no limit; one run")
        rss = self.scenario("rss_" + n, "daemon RSS with all %s entries known" % n, "MiB", "lower",
                            note="no limit; one run")
        for cls in self.mounts:
            if cls.slow_listing:
                for x in (mt, ns, rss):
                    x.fail(cls.key, "skipped: lists %s entries too slowly (minutes per 100k)" % n)
                continue

            def body(cls=cls):
                t0 = time.monotonic()
                with cls(c, c.url) as m:
                    mt.add(cls.key, m.mount_seconds)
                    if cls in subj.FANHSM:
                        wait_until(m.namespace_done, 1800, m.name + " crawl", interval=0.5)
                    else:
                        find_stat(m.path("huge"))
                    ns.add(cls.key, time.monotonic() - t0)
                    rss.add(cls.key, m.rss_kib() / 1024)
            self.attempt([mt, ns, rss], cls.key, body)

    # ---- tar tzvf at a limited rate; unzip -l ----
    def archives(self):
        p, c = self.p, self.ctx
        tr = self.scenario("tar_first_entry", "time to first `tar tzvf` entry, %d MiB .tar.gz at %s/s"
                           % (p.tar_mib, p.rate), "s", "lower", "curl",
                           note="curl limit: `curl | tar tzvf -`, which streams too")
        uz = self.scenario("unzip_l_bytes", "bytes fetched by `unzip -l` of a %d MiB zip" % p.zip_mib, "bytes",
                           "lower", "curl", ratio="fraction", note="curl limit: the whole file")
        zsize = os.path.getsize(os.path.join(c.www, "bundle.zip"))
        for run in range(p.runs):
            log("archives: run %d/%d" % (run + 1, p.runs))
            self.attempt(tr, "curl", lambda: tr.add("curl", first_line(
                ["sh", "-c", "curl -s -f %sarchive.tar.gz | tar tzvf -" % c.rate_url])))
            uz.add("curl", zsize)
            for cls in self.mounts:
                def tar(cls=cls):
                    with self.mounted(cls, c.rate_url) as m:
                        tr.add(cls.key, first_line(["tar", "tzvf", m.path("archive.tar.gz")]))
                self.attempt(tr, cls.key, tar)

                def unzip(cls=cls):
                    with self.mounted(cls, c.url) as m:
                        sh(["unzip", "-l", m.path("bundle.zip")], timeout=600)
                        time.sleep(0.5)
                        uz.add(cls.key, m.fetched_bytes())
                self.attempt(uz, cls.key, unzip)
        tr.extra["full_download_s_curl"] = timed(["curl", "-s", "-o", "/dev/null", c.rate_url + "archive.tar.gz"],
                                                 timeout=1800)


def machine():
    virt = sh(["systemd-detect-virt"], check=False, timeout=10).stdout.decode().strip() if shutil.which(
        "systemd-detect-virt") else "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return ("%d cores, %.0f GiB RAM, VM (%s), Linux %s; cache fs: ext4 on a loop device (image file on the VM's "
            "disk); served data on tmpfs, nginx on 127.0.0.1; shared with other builds and tests"
            % (os.cpu_count(), mem, virt or "unknown", platform.release()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small data: a few minutes")
    g.add_argument("--full", action="store_true", help="also the 1,000,000-entry mount; 5 runs")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3, --full 5)")
    ap.add_argument("--no-build", action="store_true", help="use build-release/fanhsm as it is")
    ap.add_argument("--only", help="comma-separated blocks: big,small,tree,archives,huge")
    ap.add_argument("--subjects", help="comma-separated: fanotify,fuse,rclone,httpdirfs (default: all available)")
    ap.add_argument("--settle", action="store_true",
                    help="let fanhsm's background crawl finish before each content-cold scenario "
                         "(default: measure right after mount, the crawl competing)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/run.py: run as root (mounts, loop devices, drop_caches)")
    mode = "quick" if args.quick else "full" if args.full else "default"
    p = Params(mode, args.runs)
    missing = [t for t in ("nginx", "curl", "fio", "mkfs.ext4", "zip", "unzip", "gzip") if not shutil.which(t)
               and not os.path.exists("/usr/sbin/" + t)]
    if missing:
        sys.exit("bench/run.py: missing %s: run scripts/install-deps.sh" % " ".join(missing))
    ctx = Ctx()
    ctx.settle = args.settle
    ctx.fanhsm = os.path.join(ROOT, "build-release", "fanhsm") if args.no_build else build()
    notes = []
    mounts = []
    want = args.subjects.split(",") if args.subjects else None
    for cls in subj.FANHSM + subj.PEERS:
        if want and cls.key not in want:
            continue
        if subj.available(cls):
            mounts.append(cls)
        else:
            notes.append("%s skipped: not installed (apt-get install %s failed or was not run)" % (cls.name, cls.key))
    names = {"native": "native (ext4, same fs)", "curl": "curl (same nginx)"}
    names.update({cls.key: cls.name for cls in mounts})
    meta = {"mode": mode, "runs": p.runs, "command": "bench/run.py " + " ".join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
            "loadavg_start": open("/proc/loadavg").read().split()[0], "notes": notes,
            "fanhsm_commit": sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False,
                                timeout=10).stdout.decode().strip(),
            "sizes": vars(p), "settle": args.settle}
    notes.insert(0, "content-cold scenarios start %s" % (
        "after fanhsm's background crawl of the namespace has finished (--settle)" if args.settle else
        "right after mount: fanhsm's background crawl of the whole namespace (a HEAD request per file "
        "for HTML listings) competes with them; peers do not crawl"))
    runner = None
    t_start = time.monotonic()
    try:
        with Cleanup() as stack:
            work = tempfile.mkdtemp(prefix="fanhsm-bench.", dir="/var/tmp")
            os.chmod(work, 0o755)
            stack.callback(shutil.rmtree, work, True)
            ctx.work = work
            os.environ["FANHSM_RUN_DIR"] = os.path.join(work, "run")
            ctx.cachefs = os.path.join(work, "cachefs")
            ctx.www = os.path.join(work, "www")
            img_gib = 8 if mode == "quick" else 16
            mount_ext4_image(stack, os.path.join(work, "cache.img"), img_gib * GIB, ctx.cachefs,
                             3 * (p.tree_entries + p.huge_entries) + 200000)
            mount_tmpfs(stack, ctx.www, (p.big_mib + p.tar_mib + p.zip_mib) * MIB + 2 * GIB)
            ctx.native = os.path.join(ctx.cachefs, "native")
            data.generate(ctx.www, ctx.native, ctx.cachefs, p)
            ctx.url = stack.enter_context(web_server("nginx", ctx.www, work, "html"))
            ctx.rate_url = stack.enter_context(web_server("nginx", ctx.www, work, "html-rate-" + p.rate))
            only = set(args.only.split(",")) if args.only else None
            runner = Runner(ctx, p, mounts, only)
            for block, fn in (("big", runner.big_file), ("small", runner.small_files), ("tree", runner.tree),
                              ("archives", runner.archives)):
                if runner.want(block):
                    fn()
            if p.huge_entries and runner.want("huge"):
                runner.huge_tree()
    finally:
        if runner and runner.scenarios:
            meta["loadavg_end"] = open("/proc/loadavg").read().split()[0]
            meta["minutes"] = round((time.monotonic() - t_start) / 60, 1)
            md = report.write(args.out, meta, runner.scenarios, names)
            print(md)
            log("wrote %s/latest.md, latest.json and plots (%.1f min)" % (args.out, meta["minutes"]))


if __name__ == "__main__":
    main()
