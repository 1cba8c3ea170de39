"""The machine side of the harness: commands with bounded waits, a cleanup stack that runs
on normal exit, exceptions, Ctrl-C and SIGTERM, loop-mounted ext4, tmpfs, page-cache drops,
and per-process CPU time and RSS from /proc."""
import contextlib
import os
import signal
import subprocess
import sys
import time

MIB = 1 << 20
GIB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def sh(cmd, timeout=600, check=True, **kw):
    """Runs cmd (list, or str through sh -c) with a bounded wait; returns CompletedProcess."""
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(cmd, check=check, timeout=timeout, **kw)


def timed(cmd, timeout=600, **kw):
    """Wall-clock seconds of one command."""
    t = time.monotonic()
    sh(cmd, timeout=timeout, **kw)
    return time.monotonic() - t


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("%s: not done after %ss" % (what, timeout))
        time.sleep(interval)


def cpu_seconds(pid):
    """user+sys CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_process(proc, timeout=10):
    """SIGTERM, bounded wait, then SIGKILL: by pid (its own session), never by name."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def unmount(path, lazy_fallback=True):
    """Unmounts path if it is a mount point (also a dead FUSE mount); bounded."""
    if not is_mounted(path):
        return
    r = sh(["umount", path], timeout=60, check=False)
    if r.returncode != 0 and lazy_fallback:
        sh(["umount", "-l", path], timeout=60, check=False)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Cleanup(contextlib.ExitStack):
    """An ExitStack that also runs on SIGTERM/SIGHUP (and Ctrl-C, as KeyboardInterrupt);
    while it unwinds, further signals are ignored so that cleanup itself is not cut short."""

    def __enter__(self):
        super().__enter__()
        self._old = {}
        for s in (signal.SIGTERM, signal.SIGHUP):
            self._old[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum, _frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        try:
            return super().__exit__(*exc)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for s, h in self._old.items():
                signal.signal(s, h)


def mount_ext4_image(stack, img, size_bytes, mnt, inodes):
    """A sparse image file, mkfs.ext4, loop-mounted at mnt (the loop device goes with the umount)."""
    with open(img, "wb") as f:
        f.truncate(size_bytes)
    stack.callback(os.unlink, img)
    sh(["mkfs.ext4", "-q", "-N", str(inodes), img])
    os.makedirs(mnt, exist_ok=True)
    sh(["mount", "-o", "loop", img, mnt])
    stack.callback(unmount, mnt)


def mount_tmpfs(stack, mnt, size_bytes):
    os.makedirs(mnt, exist_ok=True)
    sh(["mount", "-t", "tmpfs", "-o", "size=%d,mode=755" % size_bytes, "tmpfs", mnt])
    stack.callback(unmount, mnt)
