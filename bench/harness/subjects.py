"""The mounts under test: fanhsm with its fanotify and FUSE frontends, rclone mount :http:
with --vfs-cache-mode full, HTTPDirFS with its cache. Each starts with an empty cache of its
own on the cache filesystem, knows its daemon's pid (CPU time, RSS) and how many bytes it
fetched, and stops everything it started, by pid."""
import json
import os
import shutil
import subprocess
import time

from .env import alive, cpu_seconds, is_mounted, log, rss_kib, sh, stop_process, unmount, wait_until

MOUNT_TIMEOUT = 60


class Mount:
    key = name = None
    slow_listing = False

    def __init__(self, ctx, url):
        self.ctx = ctx
        self.url = url
        self.mnt = os.path.join(ctx.work, "mnt-" + self.key)
        self.cache = os.path.join(ctx.cachefs, "cache-" + self.key)
        self.pid = None
        self.mount_seconds = None
        unmount(self.mnt)  # a leftover (dead FUSE) mount from an interrupted run
        os.makedirs(self.mnt, exist_ok=True)

    def path(self, rel):
        return os.path.join(self.mnt, rel)

    def __enter__(self):
        shutil.rmtree(self.cache, ignore_errors=True)
        os.makedirs(self.cache)
        t = time.monotonic()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        self.mount_seconds = time.monotonic() - t
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)

    def pids(self):
        return [self.pid]

    def cpu_seconds(self):
        """user+sys of the daemon and its helper processes (fanhsm's fetch worker)."""
        return sum(cpu_seconds(p) for p in self.pids() if p and alive(p))

    def rss_kib(self):
        return sum(rss_kib(p) for p in self.pids() if p and alive(p))

    def namespace_done(self):
        """True once the daemon has the whole tree (fanhsm: its crawl); peers list on demand."""
        return True


class Fanhsm(Mount):
    frontend = None

    def start(self):
        sh([self.ctx.fanhsm, "mount", "--cache", self.cache, "--frontend", self.frontend, self.url, self.mnt],
           timeout=MOUNT_TIMEOUT)
        st = self.status()
        self.pid = st["pid"]
        self.worker = st.get("worker", {}).get("pid")

    def pids(self):
        return [self.pid, self.worker]

    def status(self):
        return json.loads(sh([self.ctx.fanhsm, "status", "--json", self.mnt], timeout=30).stdout)

    def fetched_bytes(self):
        return self.status()["fetch"]["bytes"]

    def namespace_done(self):
        return self.status()["crawl"]["done"]

    def stop(self):
        if is_mounted(self.mnt) or (self.pid and alive(self.pid)):
            r = sh([self.ctx.fanhsm, "umount", self.mnt], timeout=90, check=False)
            if r.returncode != 0:
                log("fanhsm umount %s failed: %s" % (self.mnt, r.stderr.decode().strip()))
                if self.pid and alive(self.pid):
                    os.kill(self.pid, 9)  # our own daemon, by pid
                unmount(self.mnt)
        self.pid = None


class FanhsmFanotify(Fanhsm):
    key, name, frontend = "fanotify", "fanhsm fanotify", "fanotify"


class FanhsmFuse(Fanhsm):
    key, name, frontend = "fuse", "fanhsm FUSE", "fuse"


class FuseDaemon(Mount):
    """A peer that runs in the foreground as our child, in a session of its own."""
    proc = None

    def command(self):
        raise NotImplementedError

    def start(self):
        self.log = open(os.path.join(self.ctx.work, self.key + ".log"), "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited (%s), see %s.log" % (self.name, self.proc.returncode, self.key))
            return is_mounted(self.mnt)
        wait_until(up, MOUNT_TIMEOUT, self.name + " mount")

    def stop(self):
        unmount(self.mnt)
        if self.proc:
            stop_process(self.proc)
            self.proc = None
            self.log.close()
        unmount(self.mnt)
        self.pid = None

    def fetched_bytes(self):
        total = 0
        for dirpath, _, files in os.walk(self.cache):
            for n in files:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
        return total


class Rclone(FuseDaemon):
    key, name = "rclone", "rclone mount --vfs-cache-mode full"

    def command(self):
        return ["rclone", "mount", ":http:", self.mnt, "--http-url", self.url, "--vfs-cache-mode", "full",
                "--cache-dir", self.cache, "--read-only", "--dir-cache-time", "1h", "--config", "/dev/null"]

    def fetched_bytes(self):  # data blocks only (vfsMeta holds small JSON files)
        d = os.path.join(self.cache, "vfs")
        return sum(os.lstat(os.path.join(p, n)).st_blocks * 512 for p, _, fs in os.walk(d) for n in fs)


class Httpdirfs(FuseDaemon):
    """Debian's 1.2.5 wrongly finds that nginx serves no ranges (it checks a listing; upstream
    httpdirfs issue #188) and exits on the first read: --no-range-check is the upstream fix."""
    key, name = "httpdirfs", "HTTPDirFS --cache"
    slow_listing = True  # minutes for 10k small files or 100k entries: measured once there

    def command(self):
        return ["httpdirfs", "-f", "--no-range-check", "--cache", "--cache-location", self.cache, self.url,
                self.mnt]


PEERS = [Rclone, Httpdirfs]
FANHSM = [FanhsmFanotify, FanhsmFuse]


def available(cls):
    exe = {"rclone": "rclone", "httpdirfs": "httpdirfs"}.get(cls.key)
    return exe is None or shutil.which(exe) is not None
