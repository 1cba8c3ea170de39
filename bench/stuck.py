#!/usr/bin/python3
"""Latency while N readers are stuck (issue #14), side by side: fanhsm (fanotify), fanhsm
(FUSE) and rclone mount :http: --vfs-cache-mode full (the flags of bench/run.py). As root:

    bench/stuck.py [--fanhsm PATH] [--ns 0,32,256] [--samples 15] [--timeout 60]
                   [--subjects fanotify,fuse,rclone] [--crawl] [--out bench/results]

nginx on 127.0.0.1 serves a tmpfs tree: slow/ holds max(N)+8 files of 4 MiB that drip at
1 KiB/s (limit_rate on the files only, its listing stays fast); fast/ holds hit.bin (1 MiB),
small/ (8 KiB files) and dirs/ (small directories of 4 files each). For every subject and N,
on a fresh mount with an empty cache: list the parents, read hit.bin whole (for fanhsm, until
it is complete), start N `cat slow/fNNNN > /dev/null` processes, wait until they are all
blocked (fanhsm: `status --json` events.pending or fetch.parked >= N, at most --wait-stuck s;
rclone: 3 s), then take --samples rounds of, in turn: "hit" (open + read hit.bin whole),
"cold small read" (open + read a never-read 8 KiB file, bytes checked) and "directory open"
(os.listdir of a never-opened directory, names checked). Each operation runs in a child
process of its own, timed inside it, killed after --timeout s (recorded as ">TIMEOUTms"); after
--max-timeouts timeouts of one kind, its remaining samples in that column are skipped (the cell
says how many were taken). Then the readers are killed by pid, the mount is unmounted (killed
readers first; `fanhsm umount --lazy` only as a last resort) and the next one starts.

fanhsm is mounted with --crawl-parallel 0 unless --crawl is given: without a background crawl a
directory is listed when it is opened, so "directory open" is a remote listing for fanhsm as
for rclone (with the crawl, fanhsm has listed the directories before the readers start).

Writes bench/results/<date>-stuck.md (the table, also printed) and <date>-stuck.json (every
sample). Everything it starts or mounts is stopped by pid / unmounted on exit, error, Ctrl-C or
SIGTERM; it touches no other mount. Raises its own RLIMIT_NOFILE to the hard limit.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from harness.env import (GIB, MIB, Cleanup, alive, is_mounted, log, mount_ext4_image,  # noqa: E402
                         mount_tmpfs, sh, stop_process, unmount, wait_until)
from harness import subjects as subj  # noqa: E402

KIB = 1 << 10
SLOW_MIB = 4
SMALL = 8 * KIB
DIR_FILES = 4
KINDS = (("hit", "hit (1 MiB complete file)"),
         ("cold", "cold small read (8 KiB)"),
         ("dir", "directory open (listdir)"))

# The measured operation, in a child of its own (a timed-out one may be blocked in the
# kernel; it is killed by pid and never waited for unboundedly).
OP = r"""
import hashlib, os, sys, time
op, path = sys.argv[1], sys.argv[2]
t = time.monotonic()
try:
    if op == "read":
        with open(path, "rb") as f:
            data = f.read()
        out = "%d %s" % (len(data), hashlib.sha256(data).hexdigest())
    else:
        out = ",".join(sorted(os.listdir(path)))
except OSError as e:
    print("ERR %.3f %s" % ((time.monotonic() - t) * 1000, e), flush=True)
    sys.exit(1)
print("OK %.3f %s" % ((time.monotonic() - t) * 1000, out), flush=True)
"""


# ---- served tree and nginx --------------------------------------------------------------

def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def make_tree(www, slow_files, blocks, samples):
    """Returns {relpath: expected answer of the OP child} for every file and directory sampled."""
    expect = {}
    os.makedirs(os.path.join(www, "slow"))
    block = rand_bytes(SLOW_MIB * MIB, 1)
    for i in range(slow_files):
        with open(os.path.join(www, "slow", "f%04d" % i), "wb") as f:
            f.write(block[i:] + block[:i])  # distinct files, no zeros
    fast = os.path.join(www, "fast")
    os.makedirs(os.path.join(fast, "small"))
    os.makedirs(os.path.join(fast, "dirs"))
    hit = rand_bytes(MIB, 2)
    with open(os.path.join(fast, "hit.bin"), "wb") as f:
        f.write(hit)
    expect["fast/hit.bin"] = "%d %s" % (len(hit), hashlib.sha256(hit).hexdigest())
    for i in range(blocks * samples):
        d = rand_bytes(SMALL, 1000 + i)
        rel = "fast/small/s%04d" % i
        with open(os.path.join(www, rel), "wb") as f:
            f.write(d)
        expect[rel] = "%d %s" % (len(d), hashlib.sha256(d).hexdigest())
        rel = "fast/dirs/d%04d" % i
        os.makedirs(os.path.join(www, rel))
        names = ["n%d-%d.txt" % (i, j) for j in range(DIR_FILES)]
        for n in names:
            with open(os.path.join(www, rel, n), "wb") as f:
                f.write(rand_bytes(100 + 7 * i, 5000 + i))
        expect[rel] = ",".join(sorted(names))
    return expect


class Nginx:
    """nginx-light as in tests/integration/servers.py, with room for 256+ long transfers
    (servers.py has worker_connections 256) and files below /slow/ dripping at 1 KiB/s
    (a URI not ending in "/": the slow/ listing itself stays fast)."""

    def __init__(self, root, d):
        self.root, self.d = root, d
        os.makedirs(d, exist_ok=True)
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = "http://127.0.0.1:%d/" % self.port
        self.proc = None

    def __enter__(self):
        conf = os.path.join(self.d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
user root;
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {root};
    location / {{ autoindex on; autoindex_exact_size on; autoindex_format html; }}
    location ~ ^/slow/.*[^/]$ {{ limit_rate 1k; }}
  }}
}}
""".format(d=self.d, port=self.port, root=self.root))
        self.log = open(os.path.join(self.d, "stdout.log"), "w")
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", self.d], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            import urllib.request

            def ready():
                if self.proc.poll() is not None:
                    raise RuntimeError("nginx exited: %s" % open(os.path.join(self.d, "error.log")).read()[-2000:])
                try:
                    urllib.request.urlopen(self.url, timeout=2).read(1)
                    return True
                except OSError:
                    return False
            wait_until(ready, 20, "nginx", interval=0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.proc:
            stop_process(self.proc)  # its session: master and worker
            self.proc = None
        self.log.close()


# ---- subjects ---------------------------------------------------------------------------

class FanhsmMount(subj.Fanhsm):
    extra = []

    def start(self):
        sh([self.ctx.fanhsm, "mount", "--cache", self.cache, "--frontend", self.frontend] + self.extra
           + [self.url, self.mnt], timeout=subj.MOUNT_TIMEOUT)
        st = self.status()
        self.pid = st["pid"]
        self.worker = st.get("worker", {}).get("pid")

    def status(self, path=None):
        r = sh([self.ctx.fanhsm, "status", "--json", path or self.mnt], timeout=30)
        return json.loads(r.stdout.decode().splitlines()[0])

    def blocked(self):
        st = self.status()
        return max(st.get("events", {}).get("pending", 0), st.get("fetch", {}).get("parked", 0))

    def stop(self):
        """umount (again after a pause while the view is busy, then --lazy as a last resort);
        once the view is gone, a bounded wait for the daemon, then SIGKILL (ours, by pid).
        What it took is kept in self.stop_log for the report."""
        pids = [p for p in (self.pid, getattr(self, "worker", None)) if p]
        self.stop_log = []
        t = time.monotonic()
        if is_mounted(self.mnt) or any(alive(p) for p in pids):
            for cmd in (["umount"], ["umount"], ["umount", "--lazy"]):
                if not is_mounted(self.mnt):
                    break
                r = sh([self.ctx.fanhsm] + cmd + [self.mnt], timeout=90, check=False)
                if r.returncode == 0:
                    break
                msg = r.stderr.decode().strip().split(": ", 2)[-1][:160]
                self.stop_log.append("`fanhsm %s` failed after %.0f s: %s" % (" ".join(cmd), time.monotonic() - t, msg))
                log("fanhsm %s %s: %s" % (" ".join(cmd), self.mnt, msg))
                if is_mounted(self.mnt):
                    time.sleep(2)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not any(alive(p) for p in pids), 30, "fanhsm daemon exit", interval=0.1)
            for p in pids:
                if alive(p):
                    self.stop_log.append("daemon pid %d still alive %.0f s after umount: SIGKILL"
                                         % (p, time.monotonic() - t))
                    log(self.stop_log[-1])
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            unmount(self.mnt)
        self.stop_seconds = round(time.monotonic() - t, 1)
        self.pid = None


class Fanotify(FanhsmMount):
    key, name, frontend = "fanotify", "fanhsm fanotify", "fanotify"


class Fuse(FanhsmMount):
    key, name, frontend = "fuse", "fanhsm FUSE", "fuse"


class Rclone(subj.Rclone):
    def blocked(self):
        return None


SUBJECTS = {"fanotify": Fanotify, "fuse": Fuse, "rclone": Rclone}


# ---- readers and samples ----------------------------------------------------------------

class Readers:
    """`cat PATH > /dev/null` per path, each in a session of its own; killed by pid."""

    def __init__(self, paths, errdir):
        os.makedirs(errdir, exist_ok=True)
        self.procs, self.errs = [], []
        for i, p in enumerate(paths):
            err = os.path.join(errdir, "err%d" % i)
            with open(err, "wb") as e:
                self.procs.append(subprocess.Popen(["cat", p], stdout=subprocess.DEVNULL, stderr=e,
                                                   stdin=subprocess.DEVNULL, start_new_session=True))
            self.errs.append(err)

    def running(self):
        return sum(1 for p in self.procs if p.poll() is None)

    def failures(self):
        out = []
        for p, e in zip(self.procs, self.errs):
            if p.poll() is not None:
                out.append("exit %s: %s" % (p.returncode, open(e, errors="replace").read().strip()[:120]))
        return out

    def kill(self, timeout=30):
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.01, deadline - time.monotonic()))
        return self.running()  # still there: blocked in the kernel (reaped after the umount)

    def reap(self, timeout=30):
        deadline = time.monotonic() + timeout
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.01, deadline - time.monotonic()))
        return self.running()


class Ops:
    """Runs OP children; keeps the killed ones that did not go away to reap them later."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.leftover = []

    def run(self, op, path, expect):
        """ms (float), or "timeout", or "error: ..."."""
        p = subprocess.Popen(["/usr/bin/python3", "-c", OP, op, path], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = p.communicate(timeout=self.timeout + 2)  # + the child's start-up
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            try:
                p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.leftover.append(p)
            return "timeout"
        words = out.decode().strip().split(" ", 2)
        if len(words) < 2:
            return "error: %s" % (err.decode().strip()[-200:] or "no output")
        if words[0] != "OK":
            return "error: %s" % " ".join(words[2:])
        ms = float(words[1])
        if ms > self.timeout * 1000:
            return "timeout"
        got = words[2] if len(words) > 2 else ""
        if got != expect:
            return "error: wrong answer (%s...)" % got[:40]
        return ms

    def reap(self, timeout=30):
        deadline = time.monotonic() + timeout
        for p in self.leftover:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.communicate(timeout=max(0.01, deadline - time.monotonic()))
        self.leftover = [p for p in self.leftover if p.poll() is None]
        return len(self.leftover)


def summary(samples, taken_of, timeout_ms):
    """median / p90 / max of the samples (ms); a timeout counts as infinite (shown as >timeout)."""
    vals = [s for s in samples if isinstance(s, float)]
    to = sum(1 for s in samples if s == "timeout")
    errs = [s for s in samples if isinstance(s, str) and s != "timeout"]
    order = sorted(vals) + [math.inf] * to
    out = {"median": None, "p90": None, "max": None, "n": len(samples), "of": taken_of, "timeouts": to,
           "errors": errs}
    if order:
        def fin(x):
            return None if x == math.inf else round(x, 2)
        out["median"] = fin(statistics.median(order))
        out["p90"] = fin(order[max(0, math.ceil(0.9 * len(order)) - 1)])  # nearest rank
        out["max"] = fin(order[-1])
    return out


def fmt_ms(x, timeout_ms):
    if x is None:
        return ">%d" % timeout_ms
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 1 else "%.2f" % x


def cell(s, timeout_ms):
    if not s or s["n"] == 0:
        return "—"
    if len(s["errors"]) == s["n"]:
        return "errors: %s" % s["errors"][0][:60]
    txt = " / ".join(fmt_ms(s[k], timeout_ms) for k in ("median", "p90", "max"))
    notes = []
    if s["timeouts"]:
        notes.append("%d t/o" % s["timeouts"])
    if s["errors"]:
        notes.append("%d err" % len(s["errors"]))
    if s["n"] < s["of"]:
        notes.append("n=%d of %d" % (s["n"], s["of"]))
    return txt + (" (%s)" % ", ".join(notes) if notes else "")


def cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


# ---- one subject at one N ---------------------------------------------------------------

def measure(ctx, cls, n, block, expect):
    a = ctx.args
    res = {"subject": cls.key, "n": n, "samples": {k: [] for k, _ in KINDS}, "notes": []}
    timeout_ms = a.timeout * 1000
    ops = Ops(a.timeout)
    readers = None
    m = cls(ctx, ctx.url)
    t0 = time.monotonic()
    try:
        with m:  # its exit unmounts (after the readers are killed, below)
            try:
                mp = m.mnt
                for rel in ("", "slow", "fast", "fast/small", "fast/dirs"):  # the parents, listed
                    os.listdir(os.path.join(mp, rel))
                hit = os.path.join(mp, "fast", "hit.bin")
                r = ops.run("read", hit, expect["fast/hit.bin"])
                if not isinstance(r, float):
                    raise RuntimeError("first read of hit.bin: %s" % r)
                if isinstance(m, FanhsmMount):
                    wait_until(lambda: m.status(hit).get("bytes_present") == MIB, 30, "hit.bin complete", 0.1)
                time.sleep(0.5)
                ops.run("read", hit, expect["fast/hit.bin"])
                if n:
                    readers = Readers([os.path.join(mp, "slow", "f%04d" % i) for i in range(n)],
                                      os.path.join(ctx.work, "readers-%s-%d" % (cls.key, n)))
                    if isinstance(m, FanhsmMount):
                        t = time.monotonic()
                        best = [0]

                        def stuck():
                            best[0] = max(best[0], m.blocked())
                            return best[0] >= n or readers.running() < n
                        with contextlib.suppress(TimeoutError):
                            wait_until(stuck, a.wait_stuck, "%d stuck readers" % n, interval=0.2)
                        res["blocked_at_start"] = best[0]
                        res["wait_stuck_s"] = round(time.monotonic() - t, 1)
                        if best[0] < n:
                            res["notes"].append("only %d of %d reads reported blocked (events.pending / "
                                                "fetch.parked) after %.0f s" % (best[0], n, time.monotonic() - t))
                    else:
                        time.sleep(3)
                    res["running_at_start"] = readers.running()
                log("%s N=%d: sampling (%d readers running)" % (cls.key, n, readers.running() if readers else 0))
                timeouts = {k: 0 for k, _ in KINDS}
                c0 = cpu_times()
                for i in range(a.samples):
                    idx = block * a.samples + i
                    for k, _ in KINDS:
                        if timeouts[k] >= a.max_timeouts:
                            continue
                        if k == "hit":
                            r = ops.run("read", hit, expect["fast/hit.bin"])
                        elif k == "cold":
                            rel = "fast/small/s%04d" % idx
                            r = ops.run("read", os.path.join(mp, rel), expect[rel])
                        else:
                            rel = "fast/dirs/d%04d" % idx
                            r = ops.run("list", os.path.join(mp, rel), expect[rel])
                        if r == "timeout":
                            timeouts[k] += 1
                        res["samples"][k].append(r)
                c1 = cpu_times()
                res["cpu_busy_pct"] = round(100 * (c1[0] - c0[0]) / max(1, c1[1] - c0[1]))
                if readers:
                    res["running_at_end"] = readers.running()
                    res["reader_failures"] = readers.failures()[:5]
                if isinstance(m, FanhsmMount):
                    st = m.status()
                    res["status_at_end"] = {"events": st.get("events"), "fetch": st.get("fetch")}
            finally:
                if readers:
                    left = readers.kill()
                    if left:
                        res["notes"].append("%d killed readers still blocked before the umount" % left)
                    if isinstance(m, FanhsmMount) and m.pid:
                        # Let the daemon drop the killed readers' requests before the umount.
                        t = time.monotonic()
                        try:
                            wait_until(lambda: m.blocked() == 0, 15, "requests of killed readers dropped", 0.2)
                            res["drain_s"] = round(time.monotonic() - t, 1)
                        except Exception as e:  # noqa: BLE001 - a note; the umount follows anyway
                            res["notes"].append("after the readers were killed: %s" % str(e)[:160])
    finally:
        if readers and readers.reap():
            log("%d readers of %s still alive after the umount (pids %s)" % (
                readers.running(), cls.key, [p.pid for p in readers.procs if p.poll() is None][:10]))
        if ops.reap():
            log("%d timed-out operations of %s still alive after the umount" % (len(ops.leftover), cls.key))
    if getattr(m, "stop_log", None):
        res["notes"] += ["unmount: " + x for x in m.stop_log]
    res["unmount_s"] = getattr(m, "stop_seconds", None)
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["summary"] = {k: summary(res["samples"][k], a.samples, timeout_ms) for k, _ in KINDS}
    return res


# ---- report -----------------------------------------------------------------------------

def table(results, subjects, ns, timeout_ms):
    by = {(r["subject"], r["n"]): r for r in results}
    cols = [(s, n) for s in subjects for n in ns]
    names = {"fanotify": "fanotify", "fuse": "FUSE", "rclone": "rclone"}
    head = "| operation (ms: median / p90 / max) | " + " | ".join(
        "%s N=%d" % (names[s], n) for s, n in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for k, title in KINDS:
        row = [title]
        for c in cols:
            r = by.get(c)
            row.append(cell(r["summary"][k], timeout_ms) if r and "summary" in r else
                       "failed: %s" % r["error"][:80] if r and "error" in r else "—")
        lines.append("| " + " | ".join(row) + " |")
    row = ["readers still running at the end (of N)"]
    for c in cols:
        r = by.get(c)
        row.append("%s" % r.get("running_at_end", "") if r and c[1] else "")
    lines.append("| " + " | ".join(row) + " |")
    row = ["machine CPU busy while sampling (all processes)"]
    for c in cols:
        r = by.get(c)
        row.append("%s%%" % r["cpu_busy_pct"] if r and "cpu_busy_pct" in r else "")
    lines.append("| " + " | ".join(row) + " |")
    row = ["blocked reads reported by `status` when sampling began"]
    for c in cols:
        r = by.get(c)
        row.append("%s" % r.get("blocked_at_start", "") if r and c[1] and c[0] != "rclone" else
                   "(3 s sleep)" if r and c[1] else "")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanhsm", default=os.path.join(ROOT, "build-release", "fanhsm"))
    ap.add_argument("--ns", default="0,32,256")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per operation")
    ap.add_argument("--max-timeouts", type=int, default=3,
                    help="timeouts of one kind after which its remaining samples in a column are skipped")
    ap.add_argument("--wait-stuck", type=int, default=90, help="seconds to wait for N blocked reads (fanhsm)")
    ap.add_argument("--subjects", default="fanotify,fuse,rclone")
    ap.add_argument("--crawl", action="store_true", help="mount fanhsm with its background crawl (default: "
                    "--crawl-parallel 0, directories listed when opened)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/stuck.py: run as root (mounts, fanotify)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ns = [int(x) for x in args.ns.split(",")]
    subjects = args.subjects.split(",")
    for s in subjects:
        if s not in SUBJECTS:
            sys.exit("unknown subject %s" % s)
    if "rclone" in subjects and not shutil.which("rclone"):
        sys.exit("rclone not installed (scripts/install-deps.sh)")
    if not os.path.exists("/usr/sbin/nginx"):
        sys.exit("nginx not installed (scripts/install-deps.sh)")
    fanhsm = os.path.abspath(args.fanhsm)
    if any(s != "rclone" for s in subjects) and not os.access(fanhsm, os.X_OK):
        sys.exit("no fanhsm binary at %s (--fanhsm)" % fanhsm)
    extra = [] if args.crawl else ["--crawl-parallel", "0"]
    FanhsmMount.extra = extra

    ctx = argparse.Namespace(args=args, fanhsm=fanhsm)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    meta = {"started": started, "command": "bench/stuck.py " + " ".join(sys.argv[1:]),
            "fanhsm": fanhsm, "fanhsm_sha256": hashlib.sha256(open(fanhsm, "rb").read()).hexdigest()[:16]
            if os.path.exists(fanhsm) else None,
            "fanhsm_commit": sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False,
                                timeout=10).stdout.decode().strip(),
            "fanhsm_extra": extra, "rlimit_nofile": hard, "ns": ns, "samples": args.samples,
            "timeout_s": args.timeout, "loadavg_start": open("/proc/loadavg").read().split()[0],
            "machine": "%d cores, %.0f GiB RAM, Linux %s" % (
                os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
                platform.release()),
            "rclone": sh(["rclone", "version"], check=False, timeout=30).stdout.decode().split("\n")[0]
            if shutil.which("rclone") else None}
    results = []
    t_start = time.monotonic()
    blocks = len(ns) * len(subjects)
    try:
        with Cleanup() as stack:
            work = tempfile.mkdtemp(prefix="fanhsm-stuck.", dir="/var/tmp")
            os.chmod(work, 0o755)
            stack.callback(shutil.rmtree, work, True)
            ctx.work = work
            os.environ["FANHSM_RUN_DIR"] = os.path.join(work, "run")
            ctx.cachefs = os.path.join(work, "cachefs")
            ctx.www = os.path.join(work, "www")
            mount_ext4_image(stack, os.path.join(work, "cache.img"), 4 * GIB, ctx.cachefs, 200000)
            slow_files = max(ns) + 8
            mount_tmpfs(stack, ctx.www, slow_files * SLOW_MIB * MIB + 512 * MIB)
            log("generating the tree (%d slow files of %d MiB, %d small files and directories)"
                % (slow_files, SLOW_MIB, blocks * args.samples))
            expect = make_tree(ctx.www, slow_files, blocks, args.samples)
            ctx.url = stack.enter_context(Nginx(ctx.www, os.path.join(work, "nginx"))).url
            block = 0
            for s in subjects:
                for n in ns:
                    log("%s N=%d" % (s, n))
                    try:
                        r = measure(ctx, SUBJECTS[s], n, block, expect)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:  # noqa: BLE001 - one broken column must not stop the run
                        log("%s N=%d failed: %s" % (s, n, e))
                        r = {"subject": s, "n": n, "error": str(e)[:300]}
                    results.append(r)
                    log("%s N=%d: %s" % (s, n, json.dumps(r.get("summary") or r.get("error"))))
                    block += 1
    finally:
        if results:
            meta["loadavg_end"] = open("/proc/loadavg").read().split()[0]
            meta["minutes"] = round((time.monotonic() - t_start) / 60, 1)
            timeout_ms = args.timeout * 1000
            md = ["# bench/stuck.py: latency while N readers are stuck (%s)" % started, "",
                  "`%s`; fanhsm %s (sha256 %s, repo HEAD %s), mounted with `%s`; %s; nginx on 127.0.0.1, "
                  "slow/ files at 1 KiB/s; %d samples per cell, timeout %d s per operation (after %d "
                  "timeouts of one kind the rest of that cell is skipped); load average %s at start, %s "
                  "at end (stuck readers count in it: uninterruptible waits); %.1f min in all." % (
                      meta["command"], fanhsm, meta["fanhsm_sha256"], meta["fanhsm_commit"],
                      " ".join(["--frontend F"] + extra), meta["rclone"] or "", args.samples, args.timeout,
                      args.max_timeouts, meta["loadavg_start"], meta["loadavg_end"], meta["minutes"]),
                  "", table(results, subjects, ns, timeout_ms), ""]
            notes = []
            for r in results:
                for x in r.get("notes", []):
                    notes.append("%s N=%d: %s" % (r["subject"], r["n"], x))
                for k, _ in KINDS:
                    s = r.get("summary", {}).get(k)
                    if s and s["errors"]:
                        notes.append("%s N=%d %s: %s" % (r["subject"], r["n"], k, s["errors"][0][:200]))
                if r.get("reader_failures"):
                    notes.append("%s N=%d: readers that ended: %s" % (r["subject"], r["n"], r["reader_failures"][:2]))
            if notes:
                md += ["Notes:", ""] + ["- " + x for x in notes] + [""]
            text = "\n".join(md)
            os.makedirs(args.out, exist_ok=True)
            base = os.path.join(args.out, time.strftime("%Y-%m-%d") + "-stuck")
            with open(base + ".md", "w") as f:
                f.write(text)
            with open(base + ".json", "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
            print(text)
            log("wrote %s.md and .json (%.1f min)" % (base, meta["minutes"]))


if __name__ == "__main__":
    main()
