"""Issue #3: the mirror backend, mounted for real through the frontend of the run
(--frontend fanotify|fuse; issue #6 runs the same bodies through both).

Every check compares with the source tree, byte for byte, never with literals."""
import errno
import json
import mmap
import os
import random
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import (FAILURE_MEMORY_S, WAIT_S, changed_errno, is_fanhsm, mounts_below,
                      pre_access_unsupported, require_pre_access, run, wait_for)
from tree_util import content_hashes, rand_bytes, read_all, snapshot, write

MIB = 1 << 20
DEEP = os.path.join(*["level%d" % i for i in range(10)], "deep.bin")


def make_tree(root):
    """A tree with 200+ directories, 2000+ files, a 10-level deep path, odd names and modes,
    symlinks (relative, absolute outside the tree, to a directory outside, dangling, a loop),
    empty and sparse files."""
    for d in range(210):
        for f in range(10):
            write(os.path.join(root, "d%03d" % (d // 30), "sub%03d" % d, "f%d.txt" % f),
                  ("file %d/%d\n" % (d, f)).encode() * (f + 1), mode=0o640 if f % 3 else 0o644,
                  mtime_ns=1_600_000_000_123_456_789 + d * 1000 + f)
    write(os.path.join(root, DEEP), rand_bytes(12345, 1))
    write(os.path.join(root, "names", "with space.txt"), b"space\n")
    write(os.path.join(root, "names", "caf\u00e9 \u65e5\u672c.txt"), b"unicode\n")
    write(os.path.join(root, "names", "quote'\"&#%.txt"), b"odd\n")
    write(os.path.join(root, "modes", "exec.sh"), b"#!/bin/sh\n", mode=0o755)
    write(os.path.join(root, "modes", "private"), b"secret-ish\n", mode=0o600)
    write(os.path.join(root, "modes", "readonly"), b"ro\n", mode=0o444)
    write(os.path.join(root, "empty"), b"")
    os.symlink("names/with space.txt", os.path.join(root, "rel-link"))
    os.symlink("/etc/hostname", os.path.join(root, "abs-link"))
    os.symlink("/usr/share", os.path.join(root, "outside-dir-link"))  # must not be crawled
    os.symlink("d000", os.path.join(root, "inside-dir-link"))
    os.symlink("does/not/exist", os.path.join(root, "dangling"))
    os.symlink("self-loop", os.path.join(root, "self-loop"))
    os.mkdir(os.path.join(root, "emptydir"), 0o750)
    sparse = os.path.join(root, "sparse.bin")
    with open(sparse, "wb") as f:
        f.truncate(9 * MIB)
        f.seek(3 * MIB + 17)
        f.write(b"island of data")
        f.seek(8 * MIB - 5)
        f.write(b"tail!")
    for d in ["d000", "names", "emptydir", "modes"]:
        os.utime(os.path.join(root, d), ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))


def counts(root):
    """(dirs, regular files, symlinks) below root, symlinks not followed."""
    dirs = files = links = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if stat.S_ISLNK(mode):
                links += 1
            elif stat.S_ISDIR(mode):
                dirs += 1
            else:
                files += 1
    return dirs, files, links


def pread_file(path, n, off):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


@pytest.fixture
def src(workdir):
    root = os.path.join(workdir, "src")
    os.mkdir(root)
    make_tree(root)
    return root


STATUS_KEYS = {
    None: {"ok", "mountpoint", "source", "cache", "cache_fs", "frontend", "pid", "chunk_size",
           "bytes_total", "bytes_present", "files", "dirs", "symlinks", "crawl", "events", "fetch",
           "latency"},
    "latency": {"content", "dir_open"},
    "files": {"total", "empty", "partial", "full"},
    "dirs": {"total", "listed"},
    "crawl": {"done", "dirs_listed", "dirs_queued", "dirs_active", "entries", "errors", "skipped",
              "seconds"},
    "events": {"content", "dir_open", "file_open", "denied", "ignore_marks", "pending"},
    "fetch": {"count", "bytes", "errors", "readahead", "waits", "files_completed"},
}


def test_tree_matches_source_names_types_sizes_times_modes(mounter, src):
    m = mounter(src)
    st = m.status()  # right after mount: the crawl may still run, progress is reported
    for key, keys in STATUS_KEYS.items():
        assert keys <= set(st if key is None else st[key]), (key, st)
    assert st["ok"] and st["source"].endswith(src) and st["mountpoint"] == m.mountpoint
    m.wait_crawl()
    assert snapshot(m.mountpoint) == snapshot(src)
    st = m.status()
    ndirs, nfiles, nlinks = counts(src)
    assert ndirs >= 200 and nfiles >= 2000
    assert st["crawl"]["done"] and st["crawl"]["errors"] == 0
    assert st["crawl"]["dirs_queued"] == 0 and st["crawl"]["dirs_active"] == 0
    assert st["crawl"]["entries"] >= ndirs + nfiles + nlinks
    assert st["dirs"]["listed"] == st["dirs"]["total"]
    assert st["dirs"]["total"] in (ndirs, ndirs + 1)  # with or without the root
    assert st["files"]["total"] == nfiles and st["symlinks"] == nlinks
    assert st["bytes_total"] == sum(os.lstat(os.path.join(d, f)).st_size
                                    for d, _, fs in os.walk(src) for f in fs
                                    if not os.path.islink(os.path.join(d, f)))
    # Symlinks are symlinks, with their targets; the crawler never followed them.
    for name in ["rel-link", "abs-link", "outside-dir-link", "inside-dir-link", "dangling",
                 "self-loop"]:
        p = os.path.join(m.mountpoint, name)
        assert stat.S_ISLNK(os.lstat(p).st_mode), name
        assert os.readlink(p) == os.readlink(os.path.join(src, name))
        s = m.status(p)
        assert s["type"] == "symlink" and s["target"] == os.readlink(os.path.join(src, name))
    cache_tree = os.path.join(m.cache, "tree")
    assert os.path.islink(os.path.join(cache_tree, "outside-dir-link"))
    assert not os.path.exists(os.path.join(cache_tree, "usr"))
    # Listing a directory of the view gives exactly the source's names (unicode included).
    assert sorted(os.listdir(os.path.join(m.mountpoint, "names"))) == \
        sorted(os.listdir(os.path.join(src, "names")))
    assert os.listdir(os.path.join(m.mountpoint, "emptydir")) == []


def test_deep_path_stat_without_opening_parents(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    # No directory of the view was opened: lookups alone must find the deep path.
    st = os.stat(os.path.join(m.mountpoint, DEEP))
    ref = os.stat(os.path.join(src, DEEP))
    assert (st.st_size, st.st_mtime_ns, st.st_mode) == (ref.st_size, ref.st_mtime_ns, ref.st_mode)
    s = m.status(os.path.join(m.mountpoint, DEEP))
    assert s["type"] == "file" and s["state"] == "empty" and s["size"] == ref.st_size
    assert read_all(os.path.join(m.mountpoint, DEEP)) == read_all(os.path.join(src, DEEP))
    other = os.path.join("d006", "sub205", "f7.txt")
    assert os.stat(os.path.join(m.mountpoint, other)).st_size == os.stat(os.path.join(src, other)).st_size


def test_opened_directory_is_listed_at_once(mounter, src):
    m = mounter(src, extra=["--crawl-parallel", "0"])  # no background crawl: on demand only
    # Opening a directory lists it before opendir returns, crawl or not: walking down
    # level by level (as a user or `ls` does) always works.
    assert sorted(os.listdir(os.path.join(m.mountpoint, "d006"))) == \
        sorted(os.listdir(os.path.join(src, "d006")))
    names = sorted(os.listdir(os.path.join(m.mountpoint, "d006", "sub200")))
    assert names == sorted(os.listdir(os.path.join(src, "d006", "sub200")))
    level, ref = m.mountpoint, src
    for i in range(11):
        assert sorted(os.listdir(level)) == sorted(os.listdir(ref))
        level, ref = os.path.join(level, "level%d" % i), os.path.join(ref, "level%d" % i)
    assert read_all(os.path.join(m.mountpoint, DEEP)) == read_all(os.path.join(src, DEEP))
    assert not m.status()["crawl"]["done"]
    assert m.status(os.path.join(m.mountpoint, "d005"))["state"] == "unlisted"


@pytest.mark.frontend_only("fanotify", reason="lookups raise no fanotify event, so a path "
                           "below directories never opened does not exist yet; FUSE lists "
                           "them on lookup (test_deep_stat_lists_only_the_way_down)")
def test_deep_path_absent_until_its_parents_are_listed(mounter, src):
    m = mounter(src, extra=["--crawl-parallel", "0"])
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mountpoint, "d006", "sub200", "f1.txt"))
    os.listdir(os.path.join(m.mountpoint, "d006"))
    os.listdir(os.path.join(m.mountpoint, "d006", "sub200"))
    assert os.stat(os.path.join(m.mountpoint, "d006", "sub200", "f1.txt")).st_size == \
        os.stat(os.path.join(src, "d006", "sub200", "f1.txt")).st_size


@pytest.mark.frontend_only("fuse", reason="FUSE lookups list the parent on demand; fanotify "
                           "has no lookup hook (test_deep_path_absent_until_its_parents_are_listed)")
def test_deep_stat_lists_only_the_way_down(mounter, src):
    m = mounter(src, extra=["--crawl-parallel", "0"])
    # A fresh mount without a crawl: only the root is listed. The stat lists the
    # directories on the way down, and nothing else.
    before = m.status()
    assert before["dirs"]["listed"] == 1 and before["crawl"]["dirs_listed"] == 1, before
    st = os.stat(os.path.join(m.mountpoint, DEEP))
    ref = os.stat(os.path.join(src, DEEP))
    assert (st.st_size, st.st_mtime_ns, st.st_mode) == (ref.st_size, ref.st_mtime_ns, ref.st_mode)
    after = m.status()
    assert after["crawl"]["dirs_listed"] == 1 + 10, after["crawl"]  # level0 .. level9
    assert after["dirs"]["listed"] == 1 + 10
    level = m.mountpoint
    for i in range(10):
        level = os.path.join(level, "level%d" % i)
        assert m.status(level)["state"] == "listed", level
    assert m.status(os.path.join(m.mountpoint, "d000"))["state"] == "unlisted"
    s = m.status(os.path.join(m.mountpoint, DEEP))
    assert s["type"] == "file" and s["state"] == "empty" and s["size"] == ref.st_size
    other = os.path.join("d006", "sub205", "f7.txt")
    assert os.stat(os.path.join(m.mountpoint, other)).st_size == \
        os.stat(os.path.join(src, other)).st_size
    assert m.status()["crawl"]["dirs_listed"] == 1 + 10 + 2
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mountpoint, "d006", "no-such-dir", "f"))
    assert read_all(os.path.join(m.mountpoint, DEEP)) == read_all(os.path.join(src, DEEP))


def test_sequential_random_and_mmap_reads_equal_source(mounter, workdir):
    root = os.path.join(workdir, "src")
    data = rand_bytes(5 * MIB + 4321, 7)
    for name in ["seq.bin", "shutil.bin", "rand.bin", "mapped.bin"]:
        write(os.path.join(root, name), data)
    write(os.path.join(root, "one-mib"), data[:MIB])
    write(os.path.join(root, "one-mib-plus"), data[:MIB + 1])
    write(os.path.join(root, "one-mib-minus"), data[:MIB - 1])
    m = mounter(root)
    mp = m.mountpoint
    for name in ["seq.bin", "one-mib", "one-mib-plus", "one-mib-minus"]:
        assert read_all(os.path.join(mp, name)) == read_all(os.path.join(root, name)), name
    copy = os.path.join(workdir, "copy.bin")
    shutil.copyfile(os.path.join(mp, "shutil.bin"), copy)  # sendfile/copy_file_range path
    assert read_all(copy) == read_all(os.path.join(root, "shutil.bin"))
    ref = read_all(os.path.join(root, "rand.bin"))
    rng = random.Random(3)
    reads = []
    for k in range(1, 6):  # spanning every chunk boundary, from just before and just after
        b = k * MIB
        reads += [(b - 1, 2), (b - 1, 1), (b + 1, 1), (b - 4097, 8194), (b - 1, MIB + 2)]
    reads += [(rng.randrange(len(ref)), rng.choice([1, 7, 4095, 4097, 100_003, MIB + 3]))
              for _ in range(80)]
    rng.shuffle(reads)
    fd = os.open(os.path.join(mp, "rand.bin"), os.O_RDONLY)
    try:
        for off, n in reads:
            assert os.pread(fd, n, off) == ref[off:off + n], "pread(%d, %d)" % (n, off)
    finally:
        os.close(fd)
    assert m.status(os.path.join(mp, "mapped.bin"))["state"] == "empty"  # cold
    with open(os.path.join(mp, "mapped.bin"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == read_all(os.path.join(root, "mapped.bin"))


def test_eight_concurrent_readers_of_a_cold_file(mounter, workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "shared.bin"), rand_bytes(12 * MIB + 77, 8))
    ref = read_all(os.path.join(root, "shared.bin"))
    m = mounter(root)
    path = os.path.join(m.mountpoint, "shared.bin")
    assert m.status(path)["state"] == "empty"
    results = [None] * 8
    errors = []
    barrier = threading.Barrier(8)

    def reader(i):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                barrier.wait(WAIT_S)
                if i % 2:  # half read forwards in odd-sized pieces
                    parts, off = [], 0
                    while True:
                        b = os.pread(fd, 300_007, off)
                        if not b:
                            break
                        parts.append(b)
                        off += len(b)
                    results[i] = b"".join(parts)
                else:  # the other half backwards in 1 MiB pieces
                    parts = [(off, os.pread(fd, MIB, off))
                             for off in reversed(range(0, len(ref), MIB))]
                    results[i] = b"".join(p for _, p in sorted(parts))
            finally:
                os.close(fd)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), "readers still blocked"
    assert not errors, errors
    assert all(r == ref for r in results)
    wait_for(lambda: m.status(path)["state"] == "full", "shared.bin to be full")


def test_eof_empty_and_sparse_files(mounter, src):
    m = mounter(src)
    m.wait_crawl()  # lookups of names in directories never opened need the crawl
    mp = m.mountpoint
    assert read_all(os.path.join(mp, "empty")) == read_all(os.path.join(src, "empty"))
    assert read_all(os.path.join(mp, "sparse.bin")) == read_all(os.path.join(src, "sparse.bin"))
    for name in [os.path.join("names", "with space.txt"), DEEP]:
        fd = os.open(os.path.join(mp, name), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            assert size == os.stat(os.path.join(src, name)).st_size
            for off in [size, size + 10, size + 10 * MIB]:
                assert os.pread(fd, 10, off) == b"", "pread past EOF at %d of %s" % (off, name)
            assert os.pread(fd, size + 100, 0) == read_all(os.path.join(src, name))
            assert os.pread(fd, 10, size) == b""
        finally:
            os.close(fd)
    for name in os.listdir(os.path.join(src, "names")):
        assert read_all(os.path.join(mp, "names", name)) == read_all(os.path.join(src, "names", name))
    assert read_all(os.path.join(mp, "rel-link")) == read_all(os.path.join(src, "rel-link"))


def test_only_what_is_read_is_fetched(mounter, workdir):
    root = os.path.join(workdir, "src")
    os.makedirs(root)
    big = os.path.join(root, "big.bin")
    with open(big, "wb") as f:  # 1 GiB, sparse except for 4 MiB of random data in the middle
        f.truncate(1 << 30)
        f.seek((512 - 2) * MIB)
        f.write(rand_bytes(4 * MIB, 9))
    m = mounter(root)
    chunk = m.status()["chunk_size"]
    assert chunk > 0
    off = 512 * MIB + 12345
    got = pread_file(os.path.join(m.mountpoint, "big.bin"), 4096, off)
    assert got == pread_file(big, 4096, off) and got.count(0) < 100
    st = m.status(os.path.join(m.mountpoint, "big.bin"))
    assert st["state"] == "partial" and st["size"] == 1 << 30
    assert 0 < st["bytes_present"] <= chunk
    assert m.status()["fetch"]["bytes"] <= chunk
    assert m.status()["bytes_present"] <= chunk


def test_full_file_is_fetched_once(mounter, workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "hot.bin"), rand_bytes(3 * MIB, 10))
    ref = read_all(os.path.join(root, "hot.bin"))
    m = mounter(root)
    path = os.path.join(m.mountpoint, "hot.bin")
    assert read_all(path) == ref
    wait_for(lambda: m.status(path)["state"] == "full", "hot.bin to be full")
    for _ in range(5):
        assert read_all(path) == ref
    assert m.status()["fetch"]["bytes"] == len(ref)  # fetched once, in total


@pytest.mark.frontend_only("fanotify", reason="ignore marks: a full file raises no events; "
                           "under FUSE every open is a request by design")
def test_full_file_raises_no_more_events(mounter, workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "hot.bin"), rand_bytes(3 * MIB, 10))
    ref = read_all(os.path.join(root, "hot.bin"))
    m = mounter(root)
    path = os.path.join(m.mountpoint, "hot.bin")
    assert read_all(path) == ref
    wait_for(lambda: m.status(path)["state"] == "full", "hot.bin to be full")
    m.wait_durable(path)  # recorded by the sync thread, not on the reader's path
    assert read_all(path) == ref  # this read sets the ignore mark
    before = m.status()["events"]
    for _ in range(5):
        assert read_all(path) == ref
    after = m.status()["events"]
    assert after["content"] == before["content"]
    assert after["file_open"] == before["file_open"]
    assert m.status()["fetch"]["bytes"] == len(ref)  # fetched once, in total


def test_cache_persists_across_umount_and_mount(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    fulls = [os.path.join("d000", "sub000", "f9.txt"), os.path.join("d003", "sub100", "f2.txt"), DEEP]
    sparse = "sparse.bin"
    for f in fulls:
        assert read_all(os.path.join(m.mountpoint, f)) == read_all(os.path.join(src, f))
    assert pread_file(os.path.join(m.mountpoint, sparse), 100, 3 * MIB) == \
        pread_file(os.path.join(src, sparse), 100, 3 * MIB)
    for f in fulls + [sparse]:
        m.wait_durable(os.path.join(m.mountpoint, f))
    before = {f: m.status(os.path.join(m.mountpoint, f)) for f in fulls + [sparse]}
    assert all(before[f]["state"] == "full" for f in fulls)
    assert before[sparse]["state"] == "partial"
    r = m.umount()
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(m.mountpoint) and os.listdir(m.mountpoint) == []
    wait_for(lambda: not m.daemon_alive(), "the daemon to exit")
    m.mount()
    st = m.status()
    assert st["crawl"]["dirs_listed"] == 0  # nothing already listed was listed again
    # Usable at once: the whole tree is there before any directory is listed again.
    assert snapshot(m.mountpoint) == snapshot(src)
    for f in fulls + [sparse]:
        after = m.status(os.path.join(m.mountpoint, f))
        assert (after["state"], after["bytes_present"]) == \
            (before[f]["state"], before[f]["bytes_present"]), f
    for f in fulls:
        assert read_all(os.path.join(m.mountpoint, f)) == read_all(os.path.join(src, f))
    assert m.status()["fetch"]["count"] == 0  # nothing already present was fetched again
    assert pread_file(os.path.join(m.mountpoint, sparse), 100, 3 * MIB) == \
        pread_file(os.path.join(src, sparse), 100, 3 * MIB)
    assert m.status()["fetch"]["count"] == 0
    assert read_all(os.path.join(m.mountpoint, sparse)) == read_all(os.path.join(src, sparse))


def test_killed_daemon_recovers_without_losing_or_corrupting(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    names = [os.path.join("d001", "sub040", "f%d.txt" % i) for i in range(10)] + [DEEP]
    for n in names:
        assert read_all(os.path.join(m.mountpoint, n)) == read_all(os.path.join(src, n))
    assert pread_file(os.path.join(m.mountpoint, "sparse.bin"), 10, 8 * MIB - 5) == \
        pread_file(os.path.join(src, "sparse.bin"), 10, 8 * MIB - 5)
    for n in names + ["sparse.bin"]:
        m.wait_durable(os.path.join(m.mountpoint, n))
    durable = m.status(os.path.join(m.mountpoint, "sparse.bin"))["bytes_durable"]
    assert durable > 0
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    view_of_dead_daemon(m)
    r = m.mount()
    assert m.pid != old
    assert "stale" in r.stderr and m.mountpoint in r.stderr, r.stderr
    for n in names:
        assert m.status(os.path.join(m.mountpoint, n))["state"] == "full"
    assert m.status(os.path.join(m.mountpoint, "sparse.bin"))["bytes_present"] >= durable
    assert snapshot(m.mountpoint) == snapshot(src)
    assert content_hashes(m.mountpoint) == content_hashes(src)
    assert m.status()["fetch"]["errors"] == 0


def view_of_dead_daemon(m):
    """What a SIGKILLed daemon leaves at the mount point, per frontend. fanotify: the
    daemon's guard holds the groups and detaches the view. FUSE: the kernel keeps the mount,
    disconnected: every access fails with ENOTCONN until `fanhsm umount` or the next
    `fanhsm mount` clears it."""
    if m.frontend == "fanotify":
        wait_for(lambda: not os.path.ismount(m.mountpoint), "the guard to detach the view")
    else:
        assert m.mountpoint in mounts_below(m.mountpoint)
        with pytest.raises(OSError) as e:
            os.listdir(m.mountpoint)
        # ECONNABORTED once the kernel aborted the connection
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), e.value


def test_view_of_killed_daemon_never_serves_zeros(mounter, workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "cold.bin"), rand_bytes(2 * MIB, 16))
    m = mounter(root)
    m.wait_crawl()
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    try:  # EIO, ENOENT, ENOTCONN... are all acceptable; data that is not the source's is not
        got = read_all(os.path.join(m.mountpoint, "cold.bin"))
    except OSError:
        return
    assert got == read_all(os.path.join(root, "cold.bin"))


def test_writes_through_the_mount_fail_and_change_nothing(mounter, src):
    before_meta, before_data = snapshot(src), content_hashes(src)
    m = mounter(src)
    m.wait_crawl()
    mp = m.mountpoint
    name = os.path.join("names", "with space.txt")
    f = os.path.join(mp, name)
    cold = os.path.join(mp, "d002", "sub070", "f4.txt")
    view_before = snapshot(mp)
    attempts = {
        "append": lambda: open(f, "ab").close(),
        "r+": lambda: open(f, "r+b").close(),
        "truncate": lambda: os.truncate(f, 0),
        "truncate cold": lambda: os.truncate(cold, 1),
        "O_WRONLY|O_TRUNC": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
        "O_RDONLY|O_TRUNC": lambda: os.close(os.open(cold, os.O_RDONLY | os.O_TRUNC)),
        "create": lambda: open(os.path.join(mp, "new-file"), "wb").close(),
        "O_CREAT|O_EXCL": lambda: os.open(os.path.join(mp, "names", "n2"), os.O_CREAT | os.O_EXCL | os.O_WRONLY),
        "unlink": lambda: os.unlink(f),
        "unlink symlink": lambda: os.unlink(os.path.join(mp, "dangling")),
        "rmdir": lambda: os.rmdir(os.path.join(mp, "emptydir")),
        "mkdir": lambda: os.mkdir(os.path.join(mp, "newdir")),
        "rename": lambda: os.rename(f, os.path.join(mp, "moved")),
        "rename dir": lambda: os.rename(os.path.join(mp, "d000"), os.path.join(mp, "d999")),
        "link": lambda: os.link(f, os.path.join(mp, "hardlink")),
        "symlink": lambda: os.symlink("x", os.path.join(mp, "newlink")),
        "chmod": lambda: os.chmod(f, 0o777),
        "chown": lambda: os.chown(f, 65534, 65534),
        "utime": lambda: os.utime(f, ns=(1, 1)),
        "setxattr": lambda: os.setxattr(f, "user.test", b"x"),
        "mknod fifo": lambda: os.mkfifo(os.path.join(mp, "fifo")),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EROFS, errno.EPERM), (what, e.value)
    assert read_all(f) == read_all(os.path.join(src, name))
    assert snapshot(mp) == view_before
    assert snapshot(src) == before_meta and content_hashes(src) == before_data


def test_fifos_put_in_the_source_fail_their_reads_and_block_nothing(mounter, workdir):
    """Issue #14, item 8: someone who can write in a local source replaces listed files with
    FIFOs. Before, each read of one blocked a worker thread in open() until a writer came:
    every cold read on the mount hung and the daemon could not stop. Now each such read
    fails (EIO) and the rest of the mount serves on; umount works."""
    root = os.path.join(workdir, "src")
    data = {"f%d.bin" % i: rand_bytes(MIB + i, 50 + i) for i in range(8)}
    for n, d in data.items():
        write(os.path.join(root, n), d)
    m = mounter(root)
    m.wait_crawl()
    fifos = sorted(data)[:6]
    for n in fifos:
        os.unlink(os.path.join(root, n))
        os.mkfifo(os.path.join(root, n))
    # Readers as processes: if one hangs, it can be killed and the test still ends.
    readers = {n: subprocess.Popen(["cat", os.path.join(m.mountpoint, n)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE) for n in fifos}
    try:
        for n, p in readers.items():
            out, err = p.communicate(timeout=WAIT_S)
            assert p.returncode != 0 and out == b"", n
            assert b"Input/output error" in err or b"No such file" in err, err
        for n in sorted(data)[6:]:
            assert read_all(os.path.join(m.mountpoint, n)) == data[n]
    finally:
        for p in readers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert m.umount().returncode == 0


def test_daemon_raises_its_descriptor_limit(mounter, src):
    """Issue #14, item 4: under the usual soft limit of 1024, ~1000 partially read files
    made every read on the mount fail. The daemon takes its hard limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        m = mounter(src)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open("/proc/%d/limits" % m.pid) as f:
        line = [l for l in f if l.startswith("Max open files")][0].split()
    assert int(line[3]) == hard and int(line[4]) == hard, line


def test_default_caches_of_similar_mount_points_differ(fanhsm, mounter, src, workdir, frontend):
    """Issue #15, item 6: /mnt/a-b and /mnt/a/b got the same default cache directory.
    Names are escaped as systemd-escape --path does ("-" becomes \\x2d). A --cache that is
    someone else's non-empty directory is refused, not taken over."""
    if frontend == "fanotify" and pre_access_unsupported("/var/cache"):
        pytest.skip("/var/cache has no pre-content events here")
    flat = os.path.join(workdir, "a-b")
    nested = os.path.join(workdir, "a", "b")
    caches, mounts = [], []
    try:
        for mp in (flat, nested):
            os.makedirs(mp)
            mounts.append(mounter(src, mountpoint=mp, cache=False))
            caches.append(mounts[-1].status()["cache"])
            assert read_all(os.path.join(mp, "empty")) == b""
        assert caches[0] != caches[1], caches
        assert "\\x2d" in caches[0] and caches[0].startswith("/var/cache/fanhsm/"), caches
    finally:
        for m in mounts:
            m.cleanup()
        for c in caches:
            shutil.rmtree(c, ignore_errors=True)
    foreign = os.path.join(workdir, "photos")
    write(os.path.join(foreign, "holiday.jpg"), b"jpeg")
    os.makedirs(os.path.join(workdir, "mp"))
    r = run([fanhsm, "mount", "--cache", foreign, src, os.path.join(workdir, "mp")], check=False)
    assert r.returncode != 0 and "not a fanhsm cache" in r.stderr, r.stderr
    assert stat.S_IMODE(os.stat(foreign).st_mode) != 0o700
    assert os.listdir(foreign) == ["holiday.jpg"]  # nothing was created in it


def test_run_time_files_are_roots_alone(mounter, src, run_dir):
    """Issue #15, item 6: the registry (source, cache, daemon pid of every mount) was
    world-readable in /run/fanhsm."""
    m = mounter(src)
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    records = [os.path.join(run_dir, n) for n in os.listdir(run_dir) if n.endswith(".json")]
    assert records
    for r in records:
        assert stat.S_IMODE(os.stat(r).st_mode) == 0o600, r
    assert m.daemon_alive()


def test_names_with_escape_codes_reach_no_terminal_raw(mounter, workdir, fanhsm):
    """Issue #15, item 5: a source's names may carry control characters (here a terminal
    title sequence and a forged log line); fanhsm's messages (fetch errors on the terminal,
    the daemon's log) show them escaped, never raw."""
    root = os.path.join(workdir, "src")
    evil = "evil\x1b]0;pwned\x07\nforged error.bin"
    write(os.path.join(root, evil), rand_bytes(MIB, 40))
    m = mounter(root)
    m.wait_crawl()
    assert os.listdir(m.mountpoint) == [evil]  # the name itself is served as it is
    os.unlink(os.path.join(root, evil))  # its fetch will fail: an error naming it
    r = run([fanhsm, "fetch", os.path.join(m.mountpoint, evil)], check=False)
    assert r.returncode != 0
    for text in (r.stdout + r.stderr, m.log_tail(200)):
        assert "\x1b" not in text and "\x07" not in text, repr(text)
        assert "\nforged error" not in text, repr(text)
    assert "\\x1b]0;pwned\\x07\\x0aforged" in m.log_tail(200) + r.stderr


def test_unreadable_source_gives_eio_and_daemon_keeps_serving(mounter, workdir, frontend):
    root = os.path.join(workdir, "src")
    for i, name in enumerate(["gone.bin", "changed.bin", "replaced.bin", "renamed.bin",
                              "shrunk.bin", "rewritten.bin", "fine.bin"]):
        write(os.path.join(root, name), rand_bytes(2 * MIB, 11 + i))
    fine = read_all(os.path.join(root, "fine.bin"))
    m = mounter(root)
    m.wait_crawl()
    # Ways the source can no longer serve the version that was listed.
    os.unlink(os.path.join(root, "gone.bin"))
    os.rename(os.path.join(root, "renamed.bin"), os.path.join(root, "renamed-away"))
    os.rename(os.path.join(root, "replaced.bin"), os.path.join(root, "replaced-old"))
    write(os.path.join(root, "replaced.bin"), rand_bytes(MIB + 5, 30))  # other size
    os.truncate(os.path.join(root, "shrunk.bin"), MIB // 2)  # in place, shorter
    # Same size, new content and mtime, before anything was read.
    st = os.stat(os.path.join(root, "rewritten.bin"))
    write(os.path.join(root, "rewritten.bin"), rand_bytes(2 * MIB, 31))
    os.utime(os.path.join(root, "rewritten.bin"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new_rewritten = read_all(os.path.join(root, "rewritten.bin"))
    # Same size, changed in the middle of a read: part of the first chunk was read (not
    # at offset 0, which would start readahead), then the second chunk changes.
    changed = os.path.join(m.mountpoint, "changed.bin")
    old_changed = read_all(os.path.join(root, "changed.bin"))
    fd = os.open(changed, os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 12345) == old_changed[12345:13345]
        with open(os.path.join(root, "changed.bin"), "r+b") as f:
            f.seek(MIB + 10)
            f.write(b"NEW CONTENT")
        st = os.stat(os.path.join(root, "changed.bin"))
        os.utime(os.path.join(root, "changed.bin"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(OSError) as e:  # the old version's bytes are gone: only an error is right
            os.pread(fd, MIB, MIB)
        assert e.value.errno == changed_errno(frontend)
    finally:
        os.close(fd)
    # Gone (ENOENT at the source) is EIO through both; another version is changed_errno().
    expected = {"gone.bin": errno.EIO, "renamed.bin": errno.EIO,
                "replaced.bin": changed_errno(frontend), "shrunk.bin": changed_errno(frontend)}
    for name, want in expected.items():
        for attempt in range(2):  # and again: a denied range is not served as zeros later
            with pytest.raises(OSError) as e:
                read_all(os.path.join(m.mountpoint, name))
            assert e.value.errno == want, (name, attempt)
    # Never a mix of versions: either an error or all of the new version.
    try:
        got = read_all(os.path.join(m.mountpoint, "rewritten.bin"))
    except OSError as e:
        assert e.errno == changed_errno(frontend)
    else:
        assert got == new_rewritten
    assert read_all(os.path.join(m.mountpoint, "fine.bin")) == fine
    assert m.daemon_alive()
    assert m.status()["events"]["denied"] >= 5
    assert m.status()["fetch"]["errors"] >= 1
    os.rename(os.path.join(root, "renamed-away"), os.path.join(root, "renamed.bin"))
    time.sleep(FAILURE_MEMORY_S + 0.2)  # a failed fetch is remembered that long (issue #14)
    assert read_all(os.path.join(m.mountpoint, "renamed.bin")) == \
        read_all(os.path.join(root, "renamed.bin"))  # the same version is back: served again


def fanhsm_fails(fanhsm, args, *needles, prefix=()):
    r = run(list(prefix) + [fanhsm] + args, check=False)
    assert r.returncode != 0, "expected failure: %s" % args
    assert r.stderr.startswith("fanhsm: "), r.stderr
    msg = r.stderr.lower()
    for n in needles:
        assert n.lower() in msg, "%r not in %r" % (n, r.stderr)
    return r


@pytest.fixture
def tmpfs_dir(workdir):
    """A small tmpfs of this test's own, unmounted afterwards."""
    d = os.path.join(workdir, "tmpfs")
    os.mkdir(d)
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", d])
    try:
        yield d
    finally:
        run(["umount", "-l", d], check=False)


@pytest.mark.frontend_only("fanotify", reason="tmpfs has no pre-content events; the FUSE "
                           "frontend serves a tmpfs cache (test_tmpfs_cache_works_through_fuse)")
def test_tmpfs_cache_is_refused_with_a_clear_message(fanhsm, workdir, src, tmpfs_dir, run_dir):
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    r = fanhsm_fails(fanhsm, ["mount", "--frontend", "fanotify", "--cache",
                              os.path.join(tmpfs_dir, "c"), src, mp],
                     "tmpfs", "pre-content", os.path.join(tmpfs_dir, "c"))
    assert "--frontend fuse" in r.stderr, r.stderr
    assert not os.path.ismount(mp) and os.listdir(mp) == []
    assert os.listdir(run_dir) == []


@pytest.mark.frontend_only("fuse", reason="fanotify refuses tmpfs "
                           "(test_tmpfs_cache_is_refused_with_a_clear_message)")
def test_tmpfs_cache_works_through_fuse(mounter, workdir, src, tmpfs_dir):
    m = mounter(src, cache=os.path.join(tmpfs_dir, "c"))
    assert m.status()["cache_fs"] == "tmpfs"
    m.wait_crawl()
    assert snapshot(m.mountpoint) == snapshot(src)
    assert content_hashes(m.mountpoint) == content_hashes(src)
    assert m.umount().returncode == 0


def test_refusals_have_clear_messages(fanhsm, mounter, workdir, src, cachefs, run_dir, frontend):
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    cache = os.path.join(cachefs, os.path.basename(workdir), "refusals")
    fanhsm_fails(fanhsm, ["mount", "--frontend", frontend, "--cache", cache, os.path.join(workdir, "nope"), mp],
                 os.path.join(workdir, "nope"), "no such file")
    fanhsm_fails(fanhsm, ["mount", "--frontend", frontend, "--cache", cache, src, os.path.join(workdir, "nomp")],
                 os.path.join(workdir, "nomp"), "no such file")
    full = os.path.join(workdir, "full")
    os.mkdir(full)
    open(os.path.join(full, "x"), "w").close()
    fanhsm_fails(fanhsm, ["mount", "--frontend", frontend, "--cache", cache, src, full], full, "not empty")
    assert os.listdir(run_dir) == []  # no daemon was started by any refusal
    m = mounter(src, mountpoint=mp)
    m.wait_crawl()
    fanhsm_fails(fanhsm, ["mount", "--frontend", frontend, "--cache", cache + "2", src, mp], mp, "already mounted")
    assert m.daemon_alive()
    assert read_all(os.path.join(mp, "names", "with space.txt")) == \
        read_all(os.path.join(src, "names", "with space.txt"))
    unpriv = os.path.join(workdir, "unpriv")
    os.mkdir(unpriv)
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all"]
    # Without CAP_SYS_ADMIN only the FUSE frontend mounts (an ordinary user's mount:
    # test_frontends.py::test_an_ordinary_user_mounts_with_fuse); fanotify says so.
    fanhsm_fails(fanhsm, ["mount", "--frontend", "fanotify", "--cache", cache + "3", src, unpriv], "root",
                 "CAP_SYS_ADMIN", "--frontend fuse", prefix=setpriv)
    if shutil.which("capsh"):  # uid 0, but without CAP_SYS_ADMIN
        fanhsm_fails(fanhsm, ["mount", "--frontend", "fanotify", "--cache", cache + "4", src, unpriv], "CAP_SYS_ADMIN",
                     prefix=["capsh", "--drop=cap_sys_admin", "--"] + ["-c", 'exec "$0" "$@"'])
    assert not os.path.ismount(unpriv) and os.listdir(unpriv) == []
    assert len(os.listdir(run_dir)) <= 2  # only the one live mount's record (and socket)


@pytest.mark.parametrize("args,option", [
    (["--cache-size", "-1"], "--cache-size"),        # before: 2^64-1, no quota
    (["--cache-size", "5Gxyz"], "--cache-size"),     # before: accepted as 5G
    (["--cache-size", "99999999999T"], "--cache-size"),
    (["--workers", "0"], "--workers"),               # before: every directory open hung
    (["--retries", "-1"], "--retries"),              # before: "Result constructed from ok Status"
    (["--crawl-parallel", "100000"], "--crawl-parallel"),  # before: the daemon crashed
    (["--listing-ttl", "-5"], "--listing-ttl"),
    (["--min-speed", "-1"], "--min-speed"),
    (["--timeout", "0"], "--timeout"),
    (["--readahead", "1Q"], "--readahead"),
    (["--no-such-option"], "--no-such-option"),
])
def test_bad_option_values_are_refused(fanhsm, workdir, src, cachefs, run_dir, args, option):
    """Issue #16: every value is checked before anything starts; the error names the
    option, and the exit status of a command-line mistake is 2."""
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    cache = os.path.join(cachefs, os.path.basename(workdir), "cache")
    r = fanhsm_fails(fanhsm, ["mount", "--cache", cache] + args + [src, mp], option)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert not os.path.ismount(mp) and os.listdir(run_dir) == []


def test_plain_umount_stops_the_daemon(mounter, src, fanhsm, run_dir):
    """Issue #16: umount(8) of the view left the daemon running, and a later `fanhsm
    umount` failed with EINVAL. The daemon now notices (its mount's unique id is gone from
    the namespace) and stops as `fanhsm umount` would: its record goes, and the mount
    point is free for the next mount."""
    m = mounter(src)
    m.wait_crawl()
    name = os.path.join("names", "with space.txt")
    assert read_all(os.path.join(m.mountpoint, name)) == read_all(os.path.join(src, name))
    pid = m.pid
    listed = json.loads(run([fanhsm, "list", "--json"]).stdout)
    assert [(e["mountpoint"], e["pid"], e["state"], e["frontend"]) for e in listed] == \
        [(m.mountpoint, pid, "running", m.frontend)], listed
    run(["umount", m.mountpoint])
    wait_for(lambda: not is_fanhsm(pid), "the daemon to stop after umount(8)")
    assert not os.path.ismount(m.mountpoint)
    assert [f for f in os.listdir(run_dir) if f.endswith(".json")] == []
    assert json.loads(run([fanhsm, "list", "--json"]).stdout) == []
    assert run([fanhsm, "list"]).stdout == "no fanhsm mounts\n"
    r = m.umount()
    assert r.returncode != 0 and "not mounted" in r.stderr, r.stderr
    m.mount()  # the same cache and mount point again
    assert read_all(os.path.join(m.mountpoint, name)) == read_all(os.path.join(src, name))


def test_plain_lazy_umount_serves_open_files_then_stops(mounter, src):
    """`umount -l` of the view with a file open: the open file still reads the source's
    bytes from the detached view, and the daemon stops once it is closed."""
    m = mounter(src)
    m.wait_crawl()
    name = os.path.join("names", "with space.txt")
    pid = m.pid
    with open(os.path.join(m.mountpoint, name), "rb") as f:
        run(["umount", "-l", m.mountpoint])
        assert not os.path.ismount(m.mountpoint)
        assert f.read() == read_all(os.path.join(src, name))
        assert is_fanhsm(pid)  # still serving the open file
    wait_for(lambda: not is_fanhsm(pid), "the daemon to stop once the file is closed")


def test_log_file_level_and_sighup(mounter, src, workdir):
    """Issue #16: --log-file and --log-level; SIGHUP (logrotate) opens the log file again by
    its name instead of stopping the daemon (before: SIGHUP unmounted)."""
    log = os.path.join(workdir, "fanhsm.log")
    quiet = mounter(src, extra=["--log-file", log, "--log-level", "warn"])
    quiet.wait_crawl()
    assert os.path.exists(log) and " info: " not in open(log).read()
    quiet.cleanup()
    os.unlink(log)
    m = mounter(src, extra=["--log-file", log])
    m.wait_crawl()
    wait_for(lambda: os.path.exists(log) and "info: mounted" in open(log).read(), "the mount logged")
    assert not os.path.exists(os.path.join(m.cache, "meta", "fanhsm.log"))
    os.rename(log, log + ".1")  # what logrotate does
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: os.path.exists(log) and "log file reopened" in open(log).read(),
             "a new log file after SIGHUP")
    assert m.daemon_alive() and os.path.ismount(m.mountpoint)
    name = os.path.join("names", "with space.txt")
    assert read_all(os.path.join(m.mountpoint, name)) == read_all(os.path.join(src, name))


def test_umount_while_busy_fails_then_works(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    name = os.path.join("names", "with space.txt")
    f = open(os.path.join(m.mountpoint, name), "rb")
    try:
        r = m.umount()
        assert r.returncode != 0 and "busy" in r.stderr.lower(), r.stderr
        assert f.read() == read_all(os.path.join(src, name))
        assert os.path.ismount(m.mountpoint) and m.daemon_alive()
        other = os.path.join("d004", "sub130", "f5.txt")  # cold: the daemon still serves
        assert read_all(os.path.join(m.mountpoint, other)) == read_all(os.path.join(src, other))
    finally:
        f.close()
    r = m.umount()
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(m.mountpoint)
    assert os.listdir(m.mountpoint) == []
    assert not m.daemon_alive()  # umount returns once the daemon has exited


def test_lazy_umount_keeps_serving_open_files_until_closed(mounter, workdir):
    root = os.path.join(workdir, "src")
    data = rand_bytes(6 * MIB, 31)
    write(os.path.join(root, "held.bin"), data)
    m = mounter(root)
    fd = os.open(os.path.join(m.mountpoint, "held.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 12345) == data[12345:12445]
        umount = subprocess.Popen([m.fanhsm, "umount", "--lazy", m.mountpoint],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: not os.path.ismount(m.mountpoint), "the view to be detached")
        # The mount point is free, but the open file is still served: real bytes, not zeros.
        assert os.pread(fd, MIB, 4 * MIB + 7) == data[4 * MIB + 7:5 * MIB + 7]
        assert m.daemon_alive()
    finally:
        os.close(fd)
    out, err = umount.communicate(timeout=WAIT_S)
    assert umount.returncode == 0, err
    assert not m.daemon_alive()


def test_changed_file_is_served_new_after_revalidation(mounter, workdir):
    root = os.path.join(workdir, "src")
    for name, seed in [("resized.bin", 51), ("same-size.bin", 52)]:
        write(os.path.join(root, "dir", name), rand_bytes(3 * MIB + 11, seed))
    m = mounter(root, extra=["--listing-ttl", "2"])
    m.wait_crawl()
    d = os.path.join(m.mountpoint, "dir")
    # Read both files whole: the kernel has their entries, attributes and pages cached.
    for name in ["resized.bin", "same-size.bin"]:
        assert read_all(os.path.join(d, name)) == read_all(os.path.join(root, "dir", name))
        wait_for(lambda: m.status(os.path.join(d, name))["state"] == "full", name + " full")
    # The source changes: one file gets another size, the other the same size and new bytes.
    passes = m.status()["crawl"]["revalidated"]
    for name, data in [("resized.bin", rand_bytes(2 * MIB + 7, 53)),
                       ("same-size.bin", rand_bytes(3 * MIB + 11, 54))]:
        st = os.stat(os.path.join(root, "dir", name))
        write(os.path.join(root, "dir", name), data)
        os.utime(os.path.join(root, "dir", name), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    def revalidated():
        os.listdir(d)  # opening the directory revalidates it once the TTL has passed
        # The index records the new versions just before their files take the names; a
        # pass is counted once they have.
        return m.status()["crawl"]["revalidated"] > passes and \
            m.status(os.path.join(d, "resized.bin"))["size"] == 2 * MIB + 7
    wait_for(revalidated, "the listing to be revalidated")
    # At once after the listing: the new versions, never the kernel's stale attributes or pages.
    for name in ["resized.bin", "same-size.bin"]:
        ref = os.path.join(root, "dir", name)
        st = os.stat(os.path.join(d, name))
        assert (st.st_size, st.st_mtime_ns) == (os.stat(ref).st_size, os.stat(ref).st_mtime_ns)
        assert read_all(os.path.join(d, name)) == read_all(ref), name
    with open(os.path.join(d, "same-size.bin"), "rb") as f, \
            mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == read_all(os.path.join(root, "dir", "same-size.bin"))
