#!/usr/bin/env python3
"""HTTP benchmarks, side by side in one run (issue #4), as root:

    bench/http_bench.py [--quick] [--runs N]

A local nginx (autoindex, HTML listings: rclone reads no JSON) serves generated data on 127.0.0.1; the cache is a
loop-mounted ext4 image. Subjects: curl -o /dev/null (the network limit), curl -o a file on
the cache filesystem (network + cache writes), fanhsm (fanotify), rclone mount :http: with
--vfs-cache-mode full. Scenarios: cold sequential read of a large file; time to the first
`tar tzvf` entry of a .tar.gz served at a limited rate vs its full download; bytes fetched
by `unzip -l` of a large zip. Prints a markdown table, writes bench/results/http.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from servers import web_server  # noqa: E402

FANHSM = os.path.join(ROOT, "build", "fanhsm")
MIB = 1 << 20


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def timed(cmd):
    t = time.monotonic()
    sh(cmd)
    return time.monotonic() - t


def make_data(root, size_mib, tar_mib):
    os.makedirs(root)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    # A .tar.gz of many files (mostly incompressible content).
    src = os.path.join(os.path.dirname(root), "tarsrc")
    os.makedirs(src)
    per = max(1, tar_mib // 64)
    for i in range(64):
        with open(os.path.join(src, "part%02d.bin" % i), "wb") as f:
            f.write(os.urandom(per * MIB))
    sh(["tar", "czf", os.path.join(root, "archive.tar.gz"), "-C", src, "."])
    # A zip with a few thousand members and large ones: unzip -l reads the central directory.
    zsrc = os.path.join(os.path.dirname(root), "zipsrc")
    os.makedirs(zsrc)
    for i in range(2000):
        with open(os.path.join(zsrc, "small%04d.txt" % i), "w") as f:
            f.write("member %d\n" % i * 20)
    for i in range(4):
        with open(os.path.join(zsrc, "large%d.bin" % i), "wb") as f:
            f.write(os.urandom(per * 16 * MIB // 4))
    sh(["zip", "-q", "-0", "-r", os.path.join(root, "bundle.zip"), "."], cwd=zsrc)
    shutil.rmtree(src)
    shutil.rmtree(zsrc)
    for n in os.listdir(root):
        os.chmod(os.path.join(root, n), 0o644)


class Fanhsm:
    name = "fanhsm (fanotify)"

    def __init__(self, work, url, cachefs):
        self.mnt = os.path.join(work, "mnt-fanhsm")
        self.cache = os.path.join(cachefs, "fanhsm-cache")
        self.url = url
        os.makedirs(self.mnt, exist_ok=True)

    def __enter__(self):
        shutil.rmtree(self.cache, ignore_errors=True)
        sh([FANHSM, "mount", "--cache", self.cache, self.url, self.mnt])
        return self

    def fetched(self):
        out = sh([FANHSM, "status", "--json", self.mnt]).stdout
        return json.loads(out)["fetch"]["bytes"]

    def __exit__(self, *exc):
        subprocess.run([FANHSM, "umount", self.mnt])


class Rclone:
    name = "rclone mount --vfs-cache-mode full"

    def __init__(self, work, url, cachefs):
        self.mnt = os.path.join(work, "mnt-rclone")
        self.cache = os.path.join(cachefs, "rclone-cache")
        self.url = url
        self.proc = None
        if os.path.lexists(self.mnt) and not os.path.exists(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)  # a dead FUSE mount
        os.makedirs(self.mnt, exist_ok=True)

    def __enter__(self):
        shutil.rmtree(self.cache, ignore_errors=True)
        self.proc = subprocess.Popen(
            ["rclone", "mount", ":http:", self.mnt, "--http-url", self.url, "--vfs-cache-mode", "full",
             "--cache-dir", self.cache, "--read-only", "--dir-cache-time", "1h", "--config", "/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mnt):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("rclone mount did not come up")
            time.sleep(0.05)
        return self

    def fetched(self):
        total = 0
        for dirpath, _, files in os.walk(os.path.join(self.cache, "vfs")):
            for n in files:
                total += os.stat(os.path.join(dirpath, n)).st_blocks * 512
        return total

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if os.path.ismount(self.mnt) or not os.path.exists(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)


def first_tar_entry(path):
    """Seconds until `tar tzvf` prints its first line."""
    t = time.monotonic()
    p = subprocess.Popen(["tar", "tzvf", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()
    dt = time.monotonic() - t
    p.kill()
    p.wait()
    return dt


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, one run (a few minutes)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", default="50m", help="nginx limit_rate for the tar scenario")
    ap.add_argument("--seq-rate", default="200m", help="nginx limit_rate for the network-bound read")
    args = ap.parse_args()
    size_mib, tar_mib, runs = (256, 128, 1) if args.quick else (1024, 400, args.runs)
    if not os.access(FANHSM, os.X_OK):
        sh(["bash", os.path.join(ROOT, "scripts", "build.sh")])
    work = tempfile.mkdtemp(prefix="fanhsm-httpbench.", dir="/var/tmp")
    os.chmod(work, 0o755)
    os.environ["FANHSM_RUN_DIR"] = os.path.join(work, "run")
    cachefs = os.path.join(work, "cachefs")
    os.makedirs(cachefs)
    img = os.path.join(work, "cache.img")
    results = {"size_mib": size_mib, "tar_mib": tar_mib, "runs": runs, "rows": {}}
    rows = results["rows"]
    try:
        with open(img, "wb") as f:
            f.truncate((size_mib * 3 + tar_mib * 3 + 2048) * MIB)
        sh(["mkfs.ext4", "-q", img])
        sh(["mount", "-o", "loop", img, cachefs])
        www = os.path.join(work, "www")
        print("generating data...", file=sys.stderr)
        make_data(www, size_mib, tar_mib)
        big = os.path.join(www, "big.bin")
        with web_server("nginx", www, work, "html") as url:  # rclone reads HTML listings only
            print("cold sequential read of %d MiB..." % size_mib, file=sys.stderr)
            t_null, t_disk, t_f, t_r = [], [], [], []
            # The served file stays in the page cache for every subject, so each one is
            # measured against the same (fastest) server; each subject's cache starts empty.
            sh(["cat", big])
            for _ in range(runs):
                t_null.append(timed(["curl", "-s", "-o", "/dev/null", url + "big.bin"]))
                out = os.path.join(cachefs, "curl-copy")
                t_disk.append(timed(["sh", "-c", "curl -s -o %s %sbig.bin && sync -f %s" % (out, url, out)]))
                os.unlink(out)
                with Fanhsm(work, url, cachefs) as m:
                    t_f.append(timed(["dd", "if=" + os.path.join(m.mnt, "big.bin"), "of=/dev/null", "bs=1M"]))
                with Rclone(work, url, cachefs) as r:
                    t_r.append(timed(["dd", "if=" + os.path.join(r.mnt, "big.bin"), "of=/dev/null", "bs=1M"]))
            rows["cold_seq_curl_devnull"] = stats(t_null)
            rows["cold_seq_curl_to_cache_fs"] = stats(t_disk)
            rows["cold_seq_fanhsm"] = stats(t_f)
            rows["cold_seq_rclone"] = stats(t_r)
            print("unzip -l...", file=sys.stderr)
            zsize = os.path.getsize(os.path.join(www, "bundle.zip"))
            for cls in (Fanhsm, Rclone):
                with cls(work, url, cachefs) as m:
                    n = sh(["unzip", "-l", os.path.join(m.mnt, "bundle.zip")]).stdout.count(b"\n")
                    time.sleep(0.5)
                    rows["unzip_l_fetched_" + cls.__name__.lower()] = {
                        "bytes": m.fetched(), "of": zsize, "percent": 100.0 * m.fetched() / zsize, "lines": n}
        print("cold sequential read at a limited rate (%s/s)..." % args.seq_rate, file=sys.stderr)
        with web_server("nginx", www, work, "html-rate-" + args.seq_rate) as url:
            sh(["cat", big])
            l_null, l_f, l_r = [], [], []
            for _ in range(runs):
                l_null.append(timed(["curl", "-s", "-o", "/dev/null", url + "big.bin"]))
                with Fanhsm(work, url, cachefs) as m:
                    l_f.append(timed(["dd", "if=" + os.path.join(m.mnt, "big.bin"), "of=/dev/null", "bs=1M"]))
                with Rclone(work, url, cachefs) as r:
                    l_r.append(timed(["dd", "if=" + os.path.join(r.mnt, "big.bin"), "of=/dev/null", "bs=1M"]))
            rows["rate_seq_curl_devnull"] = stats(l_null)
            rows["rate_seq_fanhsm"] = stats(l_f)
            rows["rate_seq_rclone"] = stats(l_r)
        print("tar tzvf at %s/s..." % args.rate, file=sys.stderr)
        with web_server("nginx", www, work, "html-rate-" + args.rate) as url:
            tsize = os.path.getsize(os.path.join(www, "archive.tar.gz"))
            full, first_f, first_r = [], [], []
            for _ in range(runs):
                full.append(timed(["curl", "-s", "-o", "/dev/null", url + "archive.tar.gz"]))
                with Fanhsm(work, url, cachefs) as m:
                    first_f.append(first_tar_entry(os.path.join(m.mnt, "archive.tar.gz")))
                with Rclone(work, url, cachefs) as r:
                    first_r.append(first_tar_entry(os.path.join(r.mnt, "archive.tar.gz")))
            rows["tar_full_download_curl"] = dict(stats(full), bytes=tsize)
            rows["tar_first_entry_fanhsm"] = stats(first_f)
            rows["tar_first_entry_rclone"] = stats(first_r)
    finally:
        subprocess.run(["umount", cachefs], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    def line(name, key, limit_key=None, unit="s"):
        r = rows[key]
        ratio = ""
        if limit_key:
            ratio = "%.2fx" % (rows[limit_key]["median"] / r["median"])
        return "| %s | %.3f | %.3f..%.3f | %s |" % (name, r["median"], r["min"], r["max"], ratio)

    mib = size_mib
    print("\nHTTP, nginx on 127.0.0.1, cache on a loop-mounted ext4 image; %d run(s), median (min..max)\n" % runs)
    print("| cold sequential read of %d MiB | median s | min..max s | throughput ratio vs curl -o /dev/null |" % mib)
    print("|---|---|---|---|")
    print(line("curl -o /dev/null (network limit)", "cold_seq_curl_devnull"))
    print(line("curl -o file on the cache fs + sync", "cold_seq_curl_to_cache_fs", "cold_seq_curl_devnull"))
    print(line("fanhsm (fanotify)", "cold_seq_fanhsm", "cold_seq_curl_devnull"))
    print(line("rclone mount --vfs-cache-mode full", "cold_seq_rclone", "cold_seq_curl_devnull"))
    print("\n| cold sequential read of %d MiB, server limited to %s/s | median s | min..max s | throughput ratio vs curl -o /dev/null |" % (mib, args.seq_rate))
    print("|---|---|---|---|")
    print(line("curl -o /dev/null (network limit)", "rate_seq_curl_devnull"))
    print(line("fanhsm (fanotify)", "rate_seq_fanhsm", "rate_seq_curl_devnull"))
    print(line("rclone mount --vfs-cache-mode full", "rate_seq_rclone", "rate_seq_curl_devnull"))
    print("\n| tar tzvf of a %d MiB .tar.gz at %s/s | median s | min..max s | |" % (tar_mib, args.rate))
    print("|---|---|---|---|")
    print(line("full download (curl)", "tar_full_download_curl"))
    print(line("first entry, fanhsm", "tar_first_entry_fanhsm"))
    print(line("first entry, rclone", "tar_first_entry_rclone"))
    print("\n| unzip -l of a %d MiB zip | bytes fetched | %% of the file |" % (rows["unzip_l_fetched_fanhsm"]["of"] // MIB))
    print("|---|---|---|")
    for k, n in [("unzip_l_fetched_fanhsm", "fanhsm"), ("unzip_l_fetched_rclone", "rclone (cache blocks)")]:
        print("| %s | %d | %.2f%% |" % (n, rows[k]["bytes"], rows[k]["percent"]))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "http.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
