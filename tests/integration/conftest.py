"""Fixtures for fanhsm's integration tests: real mounts, real loop-mounted filesystems.

Every resource a test creates is released by its fixture, also when the test fails and on
Ctrl-C or SIGTERM (ctest's timeout): daemons are stopped with `fanhsm umount` (then by the
pid in their registry record, only daemons of this session's run dir), mounts are
unmounted, loop devices detached. Every wait is bounded.

The suite runs against one frontend (--frontend fanotify|fuse) and one cache filesystem
(--fs ext4|xfs|btrfs on a loop device, or tmpfs, which only the FUSE frontend can use).
Every test body is written once and runs on both frontends with the same assertions; a
test that is about one frontend only carries `@pytest.mark.frontend_only(name, reason)`
and is skipped on the other, with that reason.

The whole session exits with 77 (ctest's SKIP_RETURN_CODE) when not root, when the
kernel has no FAN_PRE_ACCESS (fanotify runs) or when /dev/fuse is not usable (FUSE runs).
"""
import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

WAIT_S = 60  # bound for every wait in the suite
# How long the daemon answers a failed range with the same error without asking the source
# again (core::HydratorConfig::failureMemory): a test that makes the source good again waits
# this out before it expects a read to work.
FAILURE_MEMORY_S = 1.0
SKIP = 77

FAN_CLOEXEC = 0x1
FAN_CLASS_PRE_CONTENT = 0x8
FAN_MARK_ADD = 0x1
FAN_PRE_ACCESS = 0x00100000
AT_FDCWD = -100


def pytest_addoption(parser):
    parser.addoption("--fs", default="ext4", choices=["ext4", "xfs", "btrfs", "tmpfs"],
                     help="filesystem of the cache: loop-mounted ext4, xfs, btrfs, or tmpfs "
                          "(tmpfs has no pre-content events: only with --frontend fuse)")
    parser.addoption("--frontend", default="fanotify", choices=["fanotify", "fuse"],
                     help="frontend every mount of the suite uses (fanhsm mount --frontend)")
    parser.addoption("--fanhsm", default=os.path.join(os.path.dirname(__file__), "../../build/fanhsm"),
                     help="path of the fanhsm binary")
    parser.addoption("--time-budget", type=int, default=0, metavar="SECONDS",
                     help="stop the run after SECONDS (as Ctrl-C would: teardown, then the "
                          "summary of what failed so far); 0: no limit. Set below ctest's "
                          "TIMEOUT, which kills without a report")


def pre_access_unsupported(path):
    """None if the kernel accepts a FAN_PRE_ACCESS mark on `path`, else why not. EOPNOTSUPP
    (the kernel has the event, the filesystem of `path` does not) counts as supported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.fanotify_init(FAN_CLOEXEC | FAN_CLASS_PRE_CONTENT, os.O_RDONLY)
    if fd < 0:
        return "fanotify_init(FAN_CLASS_PRE_CONTENT): %s" % os.strerror(ctypes.get_errno())
    try:
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                       ctypes.c_int, ctypes.c_char_p]
        if libc.fanotify_mark(fd, FAN_MARK_ADD, FAN_PRE_ACCESS, AT_FDCWD, path.encode()) != 0:
            e = ctypes.get_errno()
            if e != errno.EOPNOTSUPP:
                return "fanotify_mark(FAN_PRE_ACCESS): %s" % os.strerror(e)
    finally:
        os.close(fd)
    return None


def fuse_unsupported():
    """None if /dev/fuse can be opened, else why not."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return "/dev/fuse: %s" % e.strerror
    return None


def require_pre_access():
    """Skips the calling test when the kernel has no FAN_PRE_ACCESS (a FUSE run on an older
    kernel still runs everything else)."""
    why = pre_access_unsupported(tempfile.gettempdir())
    if why:
        pytest.skip("kernel without FAN_PRE_ACCESS: " + why)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "frontend_only(name, reason): the test is about frontend `name` only; "
        "skipped on the other one, with `reason`")


def pytest_collection_modifyitems(config, items):
    frontend = config.getoption("--frontend")
    for item in items:
        mark = item.get_closest_marker("frontend_only")
        if mark is None:
            continue
        name = mark.args[0]
        assert name in ("fanotify", "fuse") and mark.kwargs.get("reason"), item.nodeid
        if name != frontend:
            item.add_marker(pytest.mark.skip(reason="%s only: %s" % (name, mark.kwargs["reason"])))


def pytest_sessionstart(session):
    if os.geteuid() != 0:
        pytest.exit("integration tests need root (fanotify pre-content, mounts)", returncode=SKIP)
    frontend = session.config.getoption("--frontend")
    if session.config.getoption("--fs") == "tmpfs" and frontend != "fuse":
        pytest.exit("--fs tmpfs needs --frontend fuse (tmpfs has no pre-content events)",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    if frontend == "fanotify":
        why = pre_access_unsupported(tempfile.gettempdir())
        if why:
            pytest.exit("kernel without FAN_PRE_ACCESS (6.14+ needed): " + why, returncode=SKIP)
    else:
        why = fuse_unsupported()
        if why:
            pytest.exit("FUSE not usable: " + why, returncode=SKIP)
    # ctest's TIMEOUT and a plain `kill` send SIGTERM: turn it into the same orderly teardown
    # as Ctrl-C, so no mount, daemon or loop device outlives the run.
    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    budget = session.config.getoption("--time-budget")
    if budget > 0:
        def over_budget(signum, frame):
            raise KeyboardInterrupt("the run took more than --time-budget %d s" % budget)
        signal.signal(signal.SIGALRM, over_budget)
        signal.alarm(budget)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failed test's report shows the tail of the log of each daemon it mounted.
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":
        for m in getattr(item, "fanhsm_mounts", []):
            rep.sections.append(("daemon log of " + m.mountpoint, m.log_tail()))


def changed_errno(frontend):
    """The errno of a read that needs the remote version a file was listed with, when the
    remote has another one now: EIO through fanotify (which can deny only with a few
    errnos), ESTALE through FUSE (docs: STYLE.md, "keyed by (path, ObjectVersion)")."""
    return errno.ESTALE if frontend == "fuse" else errno.EIO


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


def mounts_below(prefix):
    """Mount targets at or below `prefix`, deepest (most recent) first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\012", "\n").replace("\\134", "\\")
            if target == prefix or target.startswith(prefix + "/"):
                out.append(target)
    return list(reversed(out))


@pytest.fixture(scope="session")
def fanhsm(pytestconfig):
    path = os.path.abspath(pytestconfig.getoption("--fanhsm"))
    assert os.access(path, os.X_OK), "no fanhsm binary at %s (build first)" % path
    return path


@pytest.fixture(scope="session")
def frontend(pytestconfig):
    """The frontend of this run: "fanotify" or "fuse"."""
    return pytestconfig.getoption("--frontend")


@pytest.fixture(scope="session")
def session_dir():
    d = tempfile.mkdtemp(prefix="fanhsm-it.", dir="/tmp")
    os.chmod(d, 0o755)  # web servers under test run workers as unprivileged users
    try:
        yield d
    finally:
        # Anything a failed fixture left mounted below the session dir (ours only).
        for target in mounts_below(d):
            subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)
        if not mounts_below(d):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cachefs(pytestconfig, session_dir):
    """A filesystem of the requested type, for caches: loop-mounted, or a tmpfs."""
    fstype = pytestconfig.getoption("--fs")
    if fstype == "tmpfs":
        mnt = os.path.join(session_dir, "cachefs")
        os.makedirs(mnt)
        run(["mount", "-t", "tmpfs", "-o", "size=3g,mode=0755", "tmpfs", mnt])
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL).returncode != 0:
                time.sleep(1)  # a daemon that just exited may still hold it for a moment
                if subprocess.run(["umount", mnt]).returncode != 0:
                    subprocess.run(["umount", "-l", mnt])
        return
    mkfs = {"ext4": ["mkfs.ext4", "-q"], "xfs": ["mkfs.xfs", "-q"], "btrfs": ["mkfs.btrfs", "-q"]}[fstype]
    if shutil.which(mkfs[0]) is None:
        pytest.exit("%s not installed" % mkfs[0], returncode=SKIP)
    img = os.path.join(session_dir, "cache.img")
    mnt = os.path.join(session_dir, "cachefs")
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(3 << 30)
    run(mkfs + [img])
    dev = run(["losetup", "--find", "--show", img]).stdout.strip()
    try:
        run(["mount", "-t", fstype, dev, mnt])
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL).returncode != 0:
                time.sleep(1)  # a daemon that just exited may still hold it for a moment
                if subprocess.run(["umount", mnt]).returncode != 0:
                    subprocess.run(["umount", "-l", mnt])
    finally:
        # Detach ours (by device name, checked against our image) if still attached.
        backing = "/sys/block/%s/loop/backing_file" % os.path.basename(dev)
        with contextlib.suppress(OSError):
            if open(backing).read().strip().startswith(img):
                subprocess.run(["losetup", "-d", dev])


@pytest.fixture(scope="session")
def run_dir(session_dir):
    d = os.path.join(session_dir, "run")
    os.makedirs(d)
    os.environ["FANHSM_RUN_DIR"] = d  # inherited by every fanhsm this suite runs
    return d


def registry_pid(mountpoint):
    """The daemon pid that this session's registry records for `mountpoint`, or None."""
    run_dir = os.environ.get("FANHSM_RUN_DIR")
    if not run_dir:
        return None
    real = os.path.realpath(mountpoint)
    for rec in glob.glob(os.path.join(run_dir, "*.json")):
        with contextlib.suppress(OSError, ValueError):
            j = json.load(open(rec))
            if j.get("mountpoint") in (mountpoint, real) and j.get("pid"):
                return int(j["pid"])
    return None


def is_fanhsm(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and open("/proc/%d/comm" % pid).read().strip() == "fanhsm"
    except (OSError, IndexError):
        return False


class Mount:
    """One fanhsm mount. Use through the `mounter` fixture (which always cleans up)."""

    def __init__(self, fanhsm, source, mountpoint, cache, frontend, extra=()):
        self.fanhsm, self.source, self.mountpoint, self.cache = fanhsm, source, mountpoint, cache
        self.frontend = frontend  # of the next mount()
        self.extra = list(extra)
        self.pid = None
        self.pids = set()  # every daemon this Mount started (a remount starts another)
        self.kept_log = None

    def mount(self, frontend=None):
        """Mounts (again); `frontend` switches the frontend for this and later mounts."""
        if frontend:
            self.frontend = frontend
        cache = ["--cache", self.cache] if self.cache else []  # none: fanhsm's default
        r = run([self.fanhsm, "mount", "--frontend", self.frontend] + cache +
                self.extra + [self.source, self.mountpoint], check=False)
        pid = registry_pid(self.mountpoint)
        if pid:
            self.pids.add(pid)
        if r.returncode != 0:
            raise AssertionError("fanhsm mount failed (%d): %s" % (r.returncode, r.stderr))
        st = self.status()
        self.pid = st["pid"]
        assert pid in (None, self.pid), "registry pid %s, status pid %s" % (pid, self.pid)
        assert st["frontend"] == self.frontend, st
        self.pids.add(self.pid)
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
        return self.pid is not None and is_fanhsm(self.pid)

    def log_tail(self, n=60):
        with contextlib.suppress(OSError, TypeError):
            with open(os.path.join(self.cache, "meta", "fanhsm.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        # The cache may have lived on a filesystem the test has removed since: the copy
        # cleanup() kept.
        return "".join(self.kept_log.splitlines(True)[-n:]) if self.kept_log else "(no log)"

    def cleanup(self):
        self.kept_log = self.log_tail(200)
        pid = registry_pid(self.mountpoint)
        if pid:
            self.pids.add(pid)
        live = [p for p in self.pids if is_fanhsm(p)]
        if pid and not live:  # a killed daemon's record and view: umount clears both
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.umount()
        if live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.umount().returncode != 0:
                    self.umount("--lazy")
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not any(is_fanhsm(p) for p in live), "daemon exit", timeout=20)
            for p in live:
                if is_fanhsm(p):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
        for target in mounts_below(self.mountpoint):
            subprocess.run(["umount", "-l", target])


@pytest.fixture
def workdir(session_dir, request):
    # Plain characters only: server configurations treat [ ] * ? in paths as globs.
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name[:40])
    d = tempfile.mkdtemp(prefix=name + ".", dir=session_dir)
    return d


@pytest.fixture
def mounter(fanhsm, cachefs, run_dir, workdir, frontend, request):
    """mounter(source, **kw) -> a mounted Mount with a fresh cache, through the run's frontend
    unless `frontend` says otherwise; all cleaned up after."""
    mounts = []

    def make(source, cache=None, mountpoint=None, extra=(), do_mount=True, frontend=frontend):
        mp = mountpoint or os.path.join(workdir, "mnt%d" % len(mounts))
        os.makedirs(mp, exist_ok=True)
        # cache=False: no --cache (fanhsm's default place); None: a fresh one on the run's fs.
        m = Mount(fanhsm, source, mp, cache if cache is not None else
                  os.path.join(cachefs, os.path.basename(workdir), "cache%d" % len(mounts)),
                  frontend, extra)
        mounts.append(m)
        if do_mount:
            m.mount()
        return m

    request.node.fanhsm_mounts = mounts  # failure reports show their daemon logs
    try:
        yield make
    finally:
        for m in reversed(mounts):
            m.cleanup()
        remove_caches(cachefs, workdir, mounts)


def remove_caches(cachefs, workdir, mounts):
    """A test's caches on the run's cache filesystem go with the test: the whole suite's
    would not fit in it (3 GiB; a full one made later tests fail with ENOSPC). Only once
    every daemon that used them is gone and nothing is mounted below them."""
    d = os.path.join(cachefs, os.path.basename(workdir))
    if any(is_fanhsm(p) for m in mounts for p in m.pids) or mounts_below(d):
        return
    shutil.rmtree(d, ignore_errors=True)
