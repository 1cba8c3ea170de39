"""Issue #8: fault injection — the fetch worker killed during reads, the daemon killed
during eviction, helpers that must not hold the fanotify groups. Each scenario is bounded
in time and repeated; every completed read is compared with the source byte for byte."""
import contextlib
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import WAIT_S, is_fanhsm, run, wait_for
from servers import available, web_server
from tree_util import rand_bytes, read_all, write

MIB = 1 << 20


def worker_pid(m):
    return m.status()["worker"]["pid"]


def kill_worker(m):
    pid = worker_pid(m)
    assert pid > 0 and pid != m.pid
    os.kill(pid, signal.SIGKILL)


def read_all_concurrently(paths, expected):
    """Reads every path fully on its own thread; returns the list of problems."""
    problems = []

    def one(p):
        try:
            with open(p, "rb") as f:
                got = f.read()
            if got != expected[p]:
                zeros = got.count(0) > expected[p].count(0)
                problems.append("%s differs from the source%s" % (p, " (zeros)" if zeros else ""))
        except OSError as e:
            problems.append("%s: %s" % (p, e))

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    return threads, problems


@pytest.mark.skipif(not available("nginx"), reason="nginx not installed")
def test_worker_killed_during_eight_concurrent_cold_reads(mounter, workdir, fanhsm):
    """8 readers of cold files served at a limited rate; the fetch worker is SIGKILLed twice
    in every round (mid-transfer: each file takes ~0.8 s at 4 MB/s per connection), 6
    rounds: every read completes and equals the source."""
    root = os.path.join(workdir, "served")
    data = {}
    for i in range(8):
        data["f%d.bin" % i] = rand_bytes(3 * MIB + 17 * i, 200 + i)
        write(os.path.join(root, "f%d.bin" % i), data["f%d.bin" % i])
    with web_server("nginx", root, workdir, "json-rate-4m") as url:
        m = mounter(url)
        m.wait_crawl()
        paths = [os.path.join(m.mountpoint, n) for n in sorted(data)]
        expected = {os.path.join(m.mountpoint, n): d for n, d in data.items()}
        for _ in range(6):
            # Cold again. Under FUSE the kernel closes the last round's handles a moment
            # after the readers did; until then those files are in use (and kept).
            wait_for(lambda: run([fanhsm, "release", "-r", m.mountpoint], check=False).returncode == 0,
                     "every file released")
            threads, problems = read_all_concurrently(paths, expected)
            time.sleep(0.15)
            kill_worker(m)
            time.sleep(0.3)
            kill_worker(m)
            for t in threads:
                t.join(timeout=WAIT_S)
            assert not any(t.is_alive() for t in threads), "a reader hung"
            assert not problems, problems
        w = m.status()["worker"]
        assert w["restarts"] >= 6, w
        assert w["retried_calls"] > 0, w  # kills landed in the middle of transfers
        assert m.status()["fetch"]["errors"] == 0


def test_worker_killed_during_a_large_streaming_read(mounter, workdir):
    root = os.path.join(workdir, "src")
    big = rand_bytes(96 * MIB, 5)
    write(os.path.join(root, "big.bin"), big)
    m = mounter(root)
    m.wait_crawl()
    got = []
    failure = []

    def reader():
        try:
            with open(os.path.join(m.mountpoint, "big.bin"), "rb") as f:
                while True:
                    b = f.read(64 * 1024)  # small reads: the stream takes a while
                    if not b:
                        break
                    got.append(b)
        except OSError as e:
            failure.append(e)

    t = threading.Thread(target=reader)
    t.start()
    kills = 0
    while t.is_alive() and kills < 8:
        time.sleep(0.05)
        kill_worker(m)
        kills += 1
    t.join(timeout=WAIT_S)
    assert not t.is_alive()
    assert not failure, failure
    assert b"".join(got) == big
    assert kills > 0


def test_daemon_killed_during_eviction_then_remount_reads_the_source(mounter, workdir):
    """Eviction running constantly under readers; the daemon is SIGKILLed in the middle;
    a remount finds a consistent index: every file reads as the source (recorded chunks are
    never holes), 3 rounds."""
    root = os.path.join(workdir, "src")
    data = {}
    for i in range(16):
        name = "d%d/f%d.bin" % (i % 2, i)
        data[name] = rand_bytes(MIB + 999 * i, 300 + i)
        write(os.path.join(root, name), data[name])
    m = mounter(root, extra=["--cache-size", "6M", "--cache-high", "0.6", "--cache-low", "0.3"])
    for _ in range(3):
        m.wait_crawl()
        stop = time.monotonic() + 1.5
        errors = []

        def reader(k):
            names = sorted(data)
            i = k
            while time.monotonic() < stop:
                p = os.path.join(m.mountpoint, names[i % len(names)])
                i += 3
                try:
                    with open(p, "rb") as f:
                        got = f.read()
                    if got != data[names[(i - 3) % len(names)]]:
                        errors.append(p + " differs")
                except OSError:
                    return  # the daemon is being killed: reads may fail, never be wrong

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: m.status()["eviction"]["files"] > 0, "eviction under load")
        os.kill(m.pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=WAIT_S)
        assert not errors, errors
        wait_for(lambda: not is_fanhsm(m.pid), "the killed daemon to go")
        m.mount()  # clears what the dead daemon left
        for name, d in data.items():
            with open(os.path.join(m.mountpoint, name), "rb") as f:
                assert f.read() == d, name


def fanotify_fds(pid):
    out = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:[fanotify]":
                out += 1
        except OSError:
            pass
    return out


def test_fetch_worker_holds_no_group_and_runs_unprivileged(mounter, workdir, frontend):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "a"), b"a" * 5000)
    os.chmod(os.path.join(root, "a"), 0o600)  # readable by root only: needs the kept capability
    m = mounter(root)
    wpid = worker_pid(m)
    with open(os.path.join(m.mountpoint, "a"), "rb") as f:
        assert f.read() == b"a" * 5000
    assert fanotify_fds(wpid) == 0
    st = open("/proc/%d/status" % wpid).read()
    # An identity of its own (issue #15, item 2): not nobody, no account's, the status's.
    uid = m.status()["worker"]["uid"]
    assert uid >= 0x7f000000, uid
    uids = [line.split()[1:] for line in st.splitlines() if line.startswith("Uid:")][0]
    gids = [line.split()[1:] for line in st.splitlines() if line.startswith("Gid:")][0]
    assert uids == [str(uid)] * 4 and gids == [str(uid)] * 4, (uids, gids)
    # So a process running as nobody (or anyone but root) cannot signal it.
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "kill", "-STOP", str(wpid)], stderr=subprocess.PIPE)
    assert r.returncode != 0
    assert "\nState:\tS" in open("/proc/%d/status" % wpid).read() or \
        "\nState:\tR" in open("/proc/%d/status" % wpid).read()
    capeff = [int(line.split()[1], 16) for line in st.splitlines() if line.startswith("CapEff:")][0]
    assert capeff == 1 << 2, hex(capeff)  # CAP_DAC_READ_SEARCH only
    assert "NoNewPrivs:\t1" in st
    if frontend == "fanotify":
        assert fanotify_fds(m.pid) == 2  # the daemon: pre-content and open groups
        guards = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                  _cmdline(int(p))[:2] == ["fanhsm", "__guard"] and
                  _cmdline(int(p))[2:3] == [m.mountpoint]]
        assert len(guards) == 1 and fanotify_fds(guards[0]) == 2  # by design, and no more


def test_worker_killed_again_and_again_does_not_fail_every_read(mounter, workdir):
    """Issue #15, item 2: a worker SIGKILLed 30 times a minute made 2,994 of 3,000 cold
    reads fail with EIO (past 30 deaths a minute it was not restarted for a while). Here it
    is killed every 0.1 s, 45 times, while small cold files are read, one after another,
    until the last kill: every read returns the source's bytes, also past the 30th kill."""
    root = os.path.join(workdir, "src")
    data = {"f%04d" % i: rand_bytes(1000 + i % 100, 500 + i) for i in range(3000)}
    for n, d in data.items():
        write(os.path.join(root, n), d)
    m = mounter(root)
    m.wait_crawl()
    kills = []
    done = threading.Event()

    def killer():
        try:
            while len(kills) < 45:
                with contextlib.suppress(Exception):
                    pid = worker_pid(m)
                    if pid > 0:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                time.sleep(0.1)
        finally:
            done.set()

    t = threading.Thread(target=killer)
    t.start()
    failed, past_threshold = [], 0
    try:
        for n, d in sorted(data.items()):  # each file read once: every read is cold
            if done.is_set():
                break
            try:
                if read_all(os.path.join(m.mountpoint, n)) != d:
                    failed.append(n + ": differs")
            except OSError as e:
                failed.append("%s: %s" % (n, e))
            past_threshold += len(kills) > 30
            time.sleep(0.003)  # spread the reads over the kills
    finally:
        t.join(timeout=WAIT_S)
    assert len(kills) == 45
    assert past_threshold > 0, "no read happened past the 30th kill"
    assert not failed, (len(failed), failed[:5])


def test_stopped_worker_is_replaced_by_the_watchdog(mounter, workdir):
    """Issue #15, item 2: a stopped worker (SIGSTOP) hung every cold read with no end. The
    watchdog replaces a worker that sends nothing while calls wait (here after 2 s): the
    read completes byte for byte."""
    root = os.path.join(workdir, "src")
    data = rand_bytes(3 * MIB, 71)
    write(os.path.join(root, "cold.bin"), data)
    m = mounter(root, extra=["--worker-watchdog", "2"])
    m.wait_crawl()
    stopped = worker_pid(m)
    os.kill(stopped, signal.SIGSTOP)
    try:
        with open(os.path.join(m.mountpoint, "cold.bin"), "rb") as f:
            assert f.read() == data
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
    w = m.status()["worker"]
    assert w["watchdog_kills"] >= 1 and w["pid"] != stopped, w
    assert "sent nothing for" in m.log_tail(100)


def _cmdline(pid):
    try:
        return open("/proc/%d/cmdline" % pid, "rb").read().decode().split("\0")[:-1]
    except OSError:
        return []


@contextlib.contextmanager
def loop_ext4(workdir, name, size_mib):
    """A dedicated ext4 on a loop device (the session's cache filesystem must not be shut
    down). Yields (mount point, remount): remount() unmounts it and mounts it again, which
    replays its journal as after a power cut."""
    img, mnt = os.path.join(workdir, name + ".img"), os.path.join(workdir, name)
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(size_mib * MIB)
    run(["mkfs.ext4", "-q", img])
    dev = run(["losetup", "--find", "--show", img]).stdout.strip()

    def umount():
        for _ in range(100):  # bounded: a killed daemon may hold it for a moment
            if subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL).returncode == 0:
                return
            time.sleep(0.1)
        run(["umount", mnt])

    def remount():
        umount()
        run(["mount", "-t", "ext4", dev, mnt])

    try:
        run(["mount", "-t", "ext4", dev, mnt])
        try:
            yield mnt, remount
        finally:
            if os.path.ismount(mnt):
                with contextlib.suppress(AssertionError, subprocess.CalledProcessError):
                    umount()
                if os.path.ismount(mnt):
                    subprocess.run(["umount", "-l", mnt])
    finally:
        subprocess.run(["losetup", "-d", dev])


def restart_after_power_cut(m, remount):
    """After the cache filesystem was shut down: the daemon is killed (as a power cut would),
    its mount cleared, and the filesystem mounted again, which replays its journal."""
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not is_fanhsm(m.pid), "the daemon to go")
    m.cleanup()
    remount()


def test_power_loss_of_the_cache_mid_write_then_remount_reads_the_source(mounter, workdir):
    """4 files fetched and synced, then 4 cold readers hydrating into a cache whose
    filesystem is shut down mid-write without flushing its journal (FS_IOC_SHUTDOWN
    NOLOGFLUSH, xfs_io's "shutdown": what a power cut leaves), 3 rounds at different
    moments. Reads during the cut fail or are right; after the journal replays, a remount on
    the same cache keeps what was durable and reads every file as the source: nothing the
    index recorded as present was a hole."""
    root = os.path.join(workdir, "src")
    data = {}
    for i in range(8):
        data["f%d.bin" % i] = rand_bytes(4 * MIB + 4097 * i, 400 + i)
        write(os.path.join(root, "f%d.bin" % i), data["f%d.bin" % i])
    for rnd, delay in enumerate([0.05, 0.2, 0.5]):
        with loop_ext4(workdir, "powerfs%d" % rnd, 96) as (fs, remount):
            cache = os.path.join(fs, "cache")
            m = mounter(root, cache=cache, extra=["--readahead", "4M"])
            m.wait_crawl()
            # First half: fetched, recorded and on disk before the cut (sync: the index's
            # WAL is synced at checkpoints only, so without it a cut may drop the records
            # too, which only costs a refetch).
            names = sorted(data)
            durable = names[:4]
            for n in durable:
                with open(os.path.join(m.mountpoint, n), "rb") as f:
                    assert f.read() == data[n]
            for n in durable:
                m.wait_durable(os.path.join(m.mountpoint, n))
            run(["sync", "-f", fs])
            # Second half: cold, cut while it is being fetched.
            expected = {os.path.join(m.mountpoint, n): data[n] for n in names[4:]}
            threads, problems = read_all_concurrently(sorted(expected), expected)
            time.sleep(delay)
            run(["xfs_io", "-x", "-c", "shutdown", fs])  # the power cut
            for t in threads:
                t.join(timeout=WAIT_S)
            wrong = [p for p in problems if "differs" in p]
            assert not wrong, wrong  # failing is allowed at the cut; wrong bytes never
            restart_after_power_cut(m, remount)
            m2 = mounter(root, cache=cache)
            try:
                recorded = m2.status()["bytes_present"]
                assert recorded >= sum(len(data[n]) for n in durable), recorded  # kept
                for p, d in data.items():
                    with open(os.path.join(m2.mountpoint, p), "rb") as f:
                        assert f.read() == d, "%s after the power cut (round %d)" % (p, rnd)
            finally:
                m2.cleanup()
