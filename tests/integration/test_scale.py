"""Issue #9, structural checks at a size CI can afford (20k files in 210 directories; the
million-file scenario with figures is bench/scale.py). No timing assertions: what is checked
is what must not grow or happen again — a recrawl on remount, events for a tree walk of
fresh directories, inode marks that pin inodes, a crawl queue held in memory."""
import os
import random
import subprocess
import sys

import pytest

from conftest import WAIT_S

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from gen_tree import content_of, layout  # noqa: E402

FILES, PER_DIR, FANOUT, BIG_EVERY = 20000, 100, 20, 500


@pytest.fixture(scope="module")
def big_src(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("scale-src"))
    subprocess.run([sys.executable, os.path.join(HERE, "..", "..", "bench", "gen_tree.py"), root,
                    "--files", str(FILES), "--per-dir", str(PER_DIR), "--fanout", str(FANOUT),
                    "--big-every", str(BIG_EVERY)], check=True, timeout=WAIT_S,
                   stderr=subprocess.DEVNULL)
    rels, big = [], {}
    for _, names in layout(FILES, PER_DIR, FANOUT):
        for r in names:
            big[r] = len(rels) % BIG_EVERY == 0
            rels.append(r)
    return root, rels, big


def walk_count(root):
    n = 0
    for _, dirs, files in os.walk(root):
        n += len(dirs) + len(files)
    return n


def fanotify_marks(pid):
    """(inode marks, of which not evictable, mount marks) held by the daemon's groups."""
    inode = pinned = mounts = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[fanotify]":
                continue
            lines = open("/proc/%d/fdinfo/%s" % (pid, fd)).read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("fanotify ino:"):
                inode += 1
                mflags = int(line.split("mflags:")[1].split()[0], 16)
                pinned += 0 if mflags & 0x200 else 1  # FAN_MARK_EVICTABLE
            elif line.startswith("fanotify mnt_id:"):
                mounts += 1
    return inode, pinned, mounts


@pytest.mark.frontend_only("fanotify", reason="counts fanotify directory events and marks")
def test_large_tree_walk_reads_remount(mounter, big_src):
    src, rels, big = big_src
    m = mounter(src)
    m.wait_crawl()
    st = m.status()
    assert st["files"]["total"] == FILES and st["crawl"]["errors"] == 0
    assert st["crawl"]["queued_peak"] <= 10000
    assert walk_count(m.mountpoint) == walk_count(src)
    # Fresh directories get ignore marks (default listing TTL): a second walk raises no
    # directory events at all.
    opens = m.status()["events"]["dir_open"]
    assert walk_count(m.mountpoint) == walk_count(src)
    assert m.status()["events"]["dir_open"] == opens
    # Random reads across the tree, byte for byte; each answered event is in the histogram.
    sample = random.Random(9).sample(rels, 300)
    for r in sample:
        with open(os.path.join(m.mountpoint, r), "rb") as f:
            assert f.read() == content_of(r, big[r]), r
    lat = m.status()["latency"]["content"]
    assert lat["count"] >= len(sample)
    assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["max_us"]
    # One mount mark per group; every inode mark is evictable (no inode pinned by a mark).
    inode, pinned, mounts = fanotify_marks(m.pid)
    assert mounts == 2 and pinned == 0 and inode >= 1
    # Remount of the full cache: ready with the crawl done, nothing listed again.
    assert m.umount().returncode == 0
    m.mount()
    st = m.status()
    assert st["crawl"]["done"] and st["crawl"]["dirs_listed"] == 0
    assert st["files"]["total"] == FILES
    assert walk_count(m.mountpoint) == walk_count(src)
    for r in sample[:50]:
        with open(os.path.join(m.mountpoint, r), "rb") as f:
            assert f.read() == content_of(r, big[r]), r
    assert m.status()["fetch"]["count"] == 0  # all of it was cached before the remount
