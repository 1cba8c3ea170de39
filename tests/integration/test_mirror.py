"""Issue #3: the mirror backend through the fanotify frontend, mounted for real.

Every check compares with the source tree, byte for byte."""
import errno
import json
import mmap
import os
import random
import stat
import subprocess
import threading

import pytest

from conftest import WAIT_S, run, wait_for
from tree_util import content_hashes, rand_bytes, read_all, snapshot, write

MIB = 1 << 20


def make_tree(root):
    """A tree with 200+ directories, 2000+ files, a 10-level deep path, odd names,
    symlinks (relative, absolute outside the tree, dangling), empty and sparse files."""
    for d in range(210):
        for f in range(10):
            write(os.path.join(root, "d%03d" % (d // 30), "sub%03d" % d, "f%d.txt" % f),
                  ("file %d/%d\n" % (d, f)).encode() * (f + 1), mode=0o640 if f % 3 else 0o644,
                  mtime_ns=1_600_000_000_123_456_789 + d * 1000 + f)
    deep = os.path.join(root, *["level%d" % i for i in range(10)])
    write(os.path.join(deep, "deep.bin"), rand_bytes(12345, 1))
    write(os.path.join(root, "names", "with space.txt"), b"space\n")
    write(os.path.join(root, "names", "caf\u00e9 \u65e5\u672c.txt"), b"unicode\n")
    write(os.path.join(root, "names", "quote'\"&#%.txt"), b"odd\n")
    write(os.path.join(root, "empty"), b"")
    os.symlink("names/with space.txt", os.path.join(root, "rel-link"))
    os.symlink("/etc/hostname", os.path.join(root, "abs-link"))
    os.symlink("does/not/exist", os.path.join(root, "dangling"))
    os.mkdir(os.path.join(root, "emptydir"), 0o750)
    sparse = os.path.join(root, "sparse.bin")
    with open(sparse, "wb") as f:
        f.truncate(9 * MIB)
        f.seek(3 * MIB + 17)
        f.write(b"island of data")
        f.seek(8 * MIB - 5)
        f.write(b"tail!")
    for d in ["d000", "names", "emptydir"]:
        os.utime(os.path.join(root, d), ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))


@pytest.fixture
def src(workdir):
    root = os.path.join(workdir, "src")
    os.mkdir(root)
    make_tree(root)
    return root


def test_tree_matches_source_names_types_sizes_times_modes(mounter, src):
    m = mounter(src)
    status = m.status()
    assert "crawl" in status and "dirs_listed" in status["crawl"]  # progress is reported
    m.wait_crawl()
    assert snapshot(m.mountpoint) == snapshot(src)
    st = m.status()
    assert st["crawl"]["done"] and st["crawl"]["errors"] == 0
    assert st["dirs"]["listed"] == st["dirs"]["total"]
    assert os.readlink(os.path.join(m.mountpoint, "abs-link")) == "/etc/hostname"


def test_deep_path_stat_without_opening_parents(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    deep = os.path.join(*["level%d" % i for i in range(10)], "deep.bin")
    st = os.stat(os.path.join(m.mountpoint, deep))
    assert st.st_size == 12345
    assert read_all(os.path.join(m.mountpoint, deep)) == read_all(os.path.join(src, deep))


def test_opened_directory_is_listed_at_once(mounter, src):
    m = mounter(src, extra=["--crawl-parallel", "0"])  # no background crawl: on demand only
    # Lookups raise no event: a path below directories never opened does not exist yet.
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mountpoint, "d006", "sub200", "f1.txt"))
    # Opening a directory lists it before opendir returns, crawl or not: walking down
    # level by level (as a user or `ls` does) always works.
    assert sorted(os.listdir(os.path.join(m.mountpoint, "d006"))) == \
        sorted(os.listdir(os.path.join(src, "d006")))
    names = sorted(os.listdir(os.path.join(m.mountpoint, "d006", "sub200")))
    assert names == sorted(os.listdir(os.path.join(src, "d006", "sub200")))
    level = m.mountpoint
    for i in range(10):
        assert os.listdir(level)
        level = os.path.join(level, "level%d" % i)
    assert os.listdir(level) == ["deep.bin"]
    assert not m.status()["crawl"]["done"]


def test_sequential_random_and_mmap_reads_equal_source(mounter, workdir):
    root = os.path.join(workdir, "src")
    data = rand_bytes(5 * MIB + 4321, 7)
    write(os.path.join(root, "seq.bin"), data)
    write(os.path.join(root, "rand.bin"), data)
    write(os.path.join(root, "mapped.bin"), data)
    write(os.path.join(root, "one-mib"), data[:MIB])
    write(os.path.join(root, "one-mib-plus"), data[:MIB + 1])
    m = mounter(root)
    mp = m.mountpoint
    assert read_all(os.path.join(mp, "seq.bin")) == data
    assert read_all(os.path.join(mp, "one-mib")) == data[:MIB]
    assert read_all(os.path.join(mp, "one-mib-plus")) == data[:MIB + 1]
    rng = random.Random(3)
    fd = os.open(os.path.join(mp, "rand.bin"), os.O_RDONLY)
    try:
        offsets = [k * MIB + d for k in range(1, 5) for d in (-1, 0, 1)]
        offsets += [rng.randrange(len(data)) for _ in range(60)]
        for off in offsets:
            n = rng.choice([1, 7, 4095, 4097, 100_000, MIB + 3])
            assert os.pread(fd, n, off) == data[off:off + n], "pread(%d, %d)" % (n, off)
    finally:
        os.close(fd)
    with open(os.path.join(mp, "mapped.bin"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == data


def test_eight_concurrent_readers_of_a_cold_file(mounter, workdir):
    root = os.path.join(workdir, "src")
    data = rand_bytes(12 * MIB + 77, 8)
    write(os.path.join(root, "shared.bin"), data)
    m = mounter(root)
    results = [None] * 8
    errors = []

    def reader(i):
        try:
            path = os.path.join(m.mountpoint, "shared.bin")
            if i % 2:
                results[i] = read_all(path)
            else:  # the other half reads backwards in 1 MiB pieces
                fd = os.open(path, os.O_RDONLY)
                parts = []
                for off in reversed(range(0, len(data), MIB)):
                    parts.append((off, os.pread(fd, MIB, off)))
                os.close(fd)
                results[i] = b"".join(p for _, p in sorted(parts))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not errors
    assert all(r == data for r in results)


def test_eof_empty_and_sparse_files(mounter, src):
    m = mounter(src)
    mp = m.mountpoint
    assert read_all(os.path.join(mp, "empty")) == b""
    assert read_all(os.path.join(mp, "sparse.bin")) == read_all(os.path.join(src, "sparse.bin"))
    fd = os.open(os.path.join(mp, "names", "with space.txt"), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert os.pread(fd, 10, size) == b""
        assert os.pread(fd, 10, size + 10) == b""
        assert os.pread(fd, 10, size + 10 * MIB) == b""
        assert os.pread(fd, 100, 0) == b"space\n"
    finally:
        os.close(fd)
    for name in ["caf\u00e9 \u65e5\u672c.txt", "quote'\"&#%.txt"]:
        assert read_all(os.path.join(mp, "names", name)) == read_all(os.path.join(src, "names", name))


def test_only_what_is_read_is_fetched(mounter, workdir):
    root = os.path.join(workdir, "src")
    os.makedirs(root)
    big = os.path.join(root, "big.bin")
    middle = rand_bytes(4 * MIB, 9)
    with open(big, "wb") as f:
        f.truncate(1 << 30)
        f.seek((512 - 2) * MIB)
        f.write(middle)
    m = mounter(root)
    chunk = m.status()["chunk_size"]
    off = 512 * MIB + 12345
    fd = os.open(os.path.join(m.mountpoint, "big.bin"), os.O_RDONLY)
    try:
        got = os.pread(fd, 4096, off)
    finally:
        os.close(fd)
    start = off - (512 - 2) * MIB
    assert got == middle[start:start + 4096]
    st = m.status(os.path.join(m.mountpoint, "big.bin"))
    assert st["state"] == "partial"
    assert 0 < st["bytes_present"] <= chunk
    assert m.status()["fetch"]["bytes"] <= chunk


def test_full_file_raises_no_more_events(mounter, workdir):
    root = os.path.join(workdir, "src")
    data = rand_bytes(3 * MIB, 10)
    write(os.path.join(root, "hot.bin"), data)
    m = mounter(root)
    path = os.path.join(m.mountpoint, "hot.bin")
    assert read_all(path) == data
    wait_for(lambda: m.status(path)["state"] == "full", "hot.bin to be full")
    assert read_all(path) == data  # this read sets the ignore mark if the first did not
    before = m.status()["events"]["content"]
    for _ in range(5):
        assert read_all(path) == data
    assert m.status()["events"]["content"] == before


def test_cache_persists_across_umount_and_mount(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    full = os.path.join("d000", "sub000", "f9.txt")
    sparse = "sparse.bin"
    assert read_all(os.path.join(m.mountpoint, full)) == read_all(os.path.join(src, full))
    fd = os.open(os.path.join(m.mountpoint, sparse), os.O_RDONLY)
    os.pread(fd, 100, 3 * MIB)
    os.close(fd)
    m.wait_durable(os.path.join(m.mountpoint, sparse))
    before_full = m.status(os.path.join(m.mountpoint, full))
    before_partial = m.status(os.path.join(m.mountpoint, sparse))
    assert before_full["state"] == "full" and before_partial["state"] == "partial"
    r = m.umount()
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(m.mountpoint)
    m.mount()
    assert m.status(os.path.join(m.mountpoint, full))["state"] == "full"
    after = m.status(os.path.join(m.mountpoint, sparse))
    assert after["state"] == "partial" and after["bytes_present"] == before_partial["bytes_present"]
    assert read_all(os.path.join(m.mountpoint, full)) == read_all(os.path.join(src, full))
    st = m.status()
    assert st["fetch"]["count"] == 0  # nothing already present was fetched again
    assert st["crawl"]["dirs_listed"] == 0  # nothing already listed was listed again
    assert snapshot(m.mountpoint) == snapshot(src)


def test_killed_daemon_recovers_without_losing_or_corrupting(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    names = [os.path.join("d001", "sub040", "f%d.txt" % i) for i in range(10)]
    for n in names:
        assert read_all(os.path.join(m.mountpoint, n)) == read_all(os.path.join(src, n))
    fd = os.open(os.path.join(m.mountpoint, "sparse.bin"), os.O_RDONLY)
    os.pread(fd, 10, 8 * MIB - 5)
    os.close(fd)
    for n in names:
        m.wait_durable(os.path.join(m.mountpoint, n))
    os.kill(m.pid, 9)
    wait_for(lambda: not m.daemon_alive(), "the killed daemon to exit")
    r = m.mount()
    assert "stale" in r.stderr
    for n in names:
        assert m.status(os.path.join(m.mountpoint, n))["state"] == "full"
    assert content_hashes(m.mountpoint) == content_hashes(src)


def test_writes_through_the_mount_fail_and_change_nothing(mounter, src):
    before_meta, before_data = snapshot(src), content_hashes(src)
    m = mounter(src)
    m.wait_crawl()
    mp = m.mountpoint
    f = os.path.join(mp, "names", "with space.txt")
    attempts = [
        lambda: open(f, "ab").close(),
        lambda: open(f, "r+b").close(),
        lambda: os.truncate(f, 0),
        lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
        lambda: open(os.path.join(mp, "new-file"), "wb").close(),
        lambda: os.unlink(f),
        lambda: os.mkdir(os.path.join(mp, "newdir")),
        lambda: os.rename(f, os.path.join(mp, "moved")),
        lambda: os.chmod(f, 0o777),
        lambda: os.setxattr(f, "user.test", b"x"),
        lambda: os.symlink("x", os.path.join(mp, "newlink")),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EROFS, errno.EPERM), e.value
    assert read_all(f) == b"space\n"
    assert snapshot(src) == before_meta and content_hashes(src) == before_data


def test_unreadable_source_gives_eio_and_daemon_keeps_serving(mounter, workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "gone.bin"), rand_bytes(MIB, 11))
    write(os.path.join(root, "changed.bin"), rand_bytes(2 * MIB, 12))
    write(os.path.join(root, "replaced.bin"), rand_bytes(MIB, 13))
    write(os.path.join(root, "fine.bin"), rand_bytes(MIB, 14))
    m = mounter(root)
    m.wait_crawl()
    os.unlink(os.path.join(root, "gone.bin"))
    os.rename(os.path.join(root, "replaced.bin"), os.path.join(root, "old"))
    write(os.path.join(root, "replaced.bin"), rand_bytes(MIB + 5, 15))
    # Same size, new content: read part of the first chunk (not at offset 0, which would
    # start readahead), then change the file.
    fd = os.open(os.path.join(m.mountpoint, "changed.bin"), os.O_RDONLY)
    first = os.pread(fd, 1000, 12345)
    assert first == rand_bytes(2 * MIB, 12)[12345:13345]
    with open(os.path.join(root, "changed.bin"), "r+b") as f:
        f.seek(MIB + 10)
        f.write(b"NEW CONTENT")
    with pytest.raises(OSError) as e:
        os.pread(fd, MIB, MIB)
    os.close(fd)
    assert e.value.errno == errno.EIO
    for name in ["gone.bin", "replaced.bin"]:
        with pytest.raises(OSError) as e:
            read_all(os.path.join(m.mountpoint, name))
        assert e.value.errno == errno.EIO, name
    assert read_all(os.path.join(m.mountpoint, "fine.bin")) == rand_bytes(MIB, 14)
    assert m.daemon_alive()
    assert m.status()["events"]["denied"] >= 3


def fanhsm_fails(fanhsm, args, *needles):
    r = run([fanhsm] + args, check=False)
    assert r.returncode != 0, "expected failure: %s" % args
    msg = r.stderr.lower()
    for n in needles:
        assert n.lower() in msg, "%r not in %r" % (n, r.stderr)
    return r


def test_refusals_have_clear_messages(fanhsm, mounter, workdir, src, cachefs):
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    tmpfs = os.path.join(workdir, "tmpfs")
    os.mkdir(tmpfs)
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", tmpfs])
    try:
        fanhsm_fails(fanhsm, ["mount", "--cache", os.path.join(tmpfs, "c"), src, mp],
                     "tmpfs", "pre-content")
    finally:
        run(["umount", tmpfs])
    assert not os.path.ismount(mp) and os.listdir(mp) == []
    cache = os.path.join(cachefs, os.path.basename(workdir), "refusals")
    fanhsm_fails(fanhsm, ["mount", "--cache", cache, os.path.join(workdir, "nope"), mp], "nope",
                 "no such file")
    fanhsm_fails(fanhsm, ["mount", "--cache", cache, src, os.path.join(workdir, "nomp")], "nomp")
    full = os.path.join(workdir, "full")
    os.mkdir(full)
    open(os.path.join(full, "x"), "w").close()
    fanhsm_fails(fanhsm, ["mount", "--cache", cache, src, full], "not empty")
    m = mounter(src, mountpoint=mp)
    fanhsm_fails(fanhsm, ["mount", "--cache", cache + "2", src, mp], "already mounted")
    assert m.daemon_alive()
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all"]
    r = subprocess.run(setpriv + [fanhsm, "mount", "--cache", cache + "3", src, full],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=WAIT_S)
    assert r.returncode != 0
    assert "root" in r.stderr and "CAP_SYS_ADMIN" in r.stderr


def test_umount_while_busy_fails_then_works(mounter, src):
    m = mounter(src)
    m.wait_crawl()
    f = open(os.path.join(m.mountpoint, "names", "with space.txt"), "rb")
    try:
        r = m.umount()
        assert r.returncode != 0 and "busy" in r.stderr
        assert f.read() == b"space\n"
        assert os.path.ismount(m.mountpoint) and m.daemon_alive()
    finally:
        f.close()
    r = m.umount()
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(m.mountpoint)
    assert os.listdir(m.mountpoint) == []
    wait_for(lambda: not m.daemon_alive(), "daemon exit")


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
