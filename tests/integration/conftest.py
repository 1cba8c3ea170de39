"""Fixtures for fanhsm's integration tests: real mounts, real loop-mounted filesystems.

Every resource a test creates is released by its fixture, also when the test fails:
daemons are stopped with `fanhsm umount` (then by pid, only pids this suite started),
mounts are unmounted, loop devices detached.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

WAIT_S = 60  # bound for every wait in the suite


def pytest_addoption(parser):
    parser.addoption("--fs", default="ext4", choices=["ext4", "xfs", "btrfs"],
                     help="filesystem of the loop-mounted cache")
    parser.addoption("--fanhsm", default=os.path.join(os.path.dirname(__file__), "../../build/fanhsm"),
                     help="path of the fanhsm binary")


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=WAIT_S, **kw)


def wait_for(pred, what, timeout=WAIT_S, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


@pytest.fixture(scope="session")
def fanhsm(pytestconfig):
    path = os.path.abspath(pytestconfig.getoption("--fanhsm"))
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    assert os.access(path, os.X_OK), "no fanhsm binary at %s (build first)" % path
    return path


@pytest.fixture(scope="session")
def session_dir():
    d = tempfile.mkdtemp(prefix="fanhsm-it.", dir="/var/tmp")
    os.chmod(d, 0o755)  # web servers under test run workers as unprivileged users
    yield d
    # Unmount anything a failed test left below the session dir (ours only), then remove it.
    for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(d + "/"):
            subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cachefs(pytestconfig, session_dir):
    """A loop-mounted filesystem of the requested type, for caches."""
    fstype = pytestconfig.getoption("--fs")
    img = os.path.join(session_dir, "cache.img")
    mnt = os.path.join(session_dir, "cachefs")
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(4 << 30)
    mkfs = {"ext4": ["mkfs.ext4", "-q"], "xfs": ["mkfs.xfs", "-q"], "btrfs": ["mkfs.btrfs", "-q"]}[fstype]
    if shutil.which(mkfs[0]) is None:
        pytest.skip("%s not installed" % mkfs[0])
    run(mkfs + [img])
    run(["mount", "-o", "loop", img, mnt])
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", mnt])


@pytest.fixture(scope="session")
def run_dir(session_dir):
    d = os.path.join(session_dir, "run")
    os.makedirs(d)
    os.environ["FANHSM_RUN_DIR"] = d  # inherited by every fanhsm this suite runs
    return d


class Mount:
    """One fanhsm mount. Use as a context manager or through the `mounter` fixture."""

    def __init__(self, fanhsm, source, mountpoint, cache, extra=()):
        self.fanhsm, self.source, self.mountpoint, self.cache = fanhsm, source, mountpoint, cache
        self.extra = list(extra)
        self.pid = None

    def mount(self):
        r = run([self.fanhsm, "mount", "--cache", self.cache] + self.extra +
                [self.source, self.mountpoint], check=False)
        if r.returncode != 0:
            raise AssertionError("fanhsm mount failed (%d): %s" % (r.returncode, r.stderr))
        self.pid = self.status()["pid"]
        return r

    def status(self, path=None):
        r = run([self.fanhsm, "status", "--json", path or self.mountpoint], check=False)
        assert r.returncode == 0, "status failed: " + r.stderr
        return json.loads(r.stdout.splitlines()[0])

    def wait_crawl(self):
        wait_for(lambda: self.status()["crawl"]["done"], "the crawl to finish")

    def wait_durable(self, path):
        def durable():
            s = self.status(path)
            return s["bytes_durable"] == s["bytes_present"]
        wait_for(durable, "durable state of " + path)

    def umount(self, *args):
        return run([self.fanhsm, "umount"] + list(args) + [self.mountpoint], check=False)

    def daemon_alive(self):
        return self.pid is not None and os.path.exists("/proc/%d" % self.pid) and \
            open("/proc/%d/stat" % self.pid).read().split()[2] != "Z"

    def cleanup(self):
        if self.daemon_alive():
            r = self.umount()
            if r.returncode != 0:
                self.umount("--lazy")
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not self.daemon_alive(), "daemon exit", timeout=20)
            if self.daemon_alive():
                os.kill(self.pid, signal.SIGKILL)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["umount", "-l", self.mountpoint])


@pytest.fixture
def workdir(session_dir, request):
    # Plain characters only: server configurations treat [ ] * ? in paths as globs.
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name[:40])
    d = tempfile.mkdtemp(prefix=name + ".", dir=session_dir)
    return d


@pytest.fixture
def mounter(fanhsm, cachefs, run_dir, workdir):
    """mounter(source, **kw) -> a mounted Mount with a fresh cache; all cleaned up after."""
    mounts = []

    def make(source, cache=None, mountpoint=None, extra=(), do_mount=True):
        mp = mountpoint or os.path.join(workdir, "mnt%d" % len(mounts))
        os.makedirs(mp, exist_ok=True)
        m = Mount(fanhsm, source, mp, cache or os.path.join(cachefs, os.path.basename(workdir),
                                                              "cache%d" % len(mounts)), extra)
        mounts.append(m)
        if do_mount:
            m.mount()
        return m

    yield make
    for m in reversed(mounts):
        m.cleanup()
