"""Issue #6: one cache, two frontends, and what a FUSE daemon leaves when it dies.

Every check compares with the source tree, byte for byte, never with literals."""
import os
import subprocess

import pytest

from conftest import is_fanhsm, mounts_below, require_pre_access, run, wait_for
from test_mirror import DEEP, pread_file, view_of_dead_daemon
from tree_util import content_hashes, rand_bytes, read_all, snapshot, write

MIB = 1 << 20


@pytest.fixture
def small_src(workdir):
    root = os.path.join(workdir, "src")
    write(os.path.join(root, "big.bin"), rand_bytes(5 * MIB + 333, 41))
    write(os.path.join(root, "a", "b", "c", "small.txt"), b"small file\n" * 100)
    write(os.path.join(root, "a", "other.bin"), rand_bytes(MIB + 1, 42))
    write(os.path.join(root, DEEP), rand_bytes(12345, 43))
    os.symlink("a/b", os.path.join(root, "link"))
    return root


def file_state(m, rel):
    s = m.status(os.path.join(m.mountpoint, rel))
    return s["state"], s["bytes_present"]


@pytest.mark.frontend_only("fuse", reason="switches between both frontends itself: run once, "
                           "in the FUSE runs")
def test_one_cache_two_frontends(mounter, small_src, cachefs, pytestconfig):
    if pytestconfig.getoption("--fs") == "tmpfs":
        pytest.skip("fanotify cannot serve a tmpfs cache")
    require_pre_access()
    src = small_src
    m = mounter(src, frontend="fanotify")
    m.wait_crawl()
    # fanotify: a whole file, the first MiB of another, a deep file.
    assert read_all(os.path.join(m.mountpoint, "a", "other.bin")) == \
        read_all(os.path.join(src, "a", "other.bin"))
    assert read_all(os.path.join(m.mountpoint, DEEP)) == read_all(os.path.join(src, DEEP))
    assert pread_file(os.path.join(m.mountpoint, "big.bin"), MIB, 0) == \
        pread_file(os.path.join(src, "big.bin"), MIB, 0)
    for rel in ["a/other.bin", DEEP, "big.bin"]:
        m.wait_durable(os.path.join(m.mountpoint, rel))
    states = {rel: file_state(m, rel) for rel in ["a/other.bin", DEEP, "big.bin",
                                                  "a/b/c/small.txt"]}
    assert states["a/other.bin"][0] == "full" and states[DEEP][0] == "full"
    assert states["big.bin"][0] == "partial" and states["big.bin"][1] >= MIB
    assert states["a/b/c/small.txt"] == ("empty", 0)
    assert m.umount().returncode == 0
    wait_for(lambda: not m.daemon_alive(), "the fanotify daemon to exit")

    # FUSE over the same cache: states and range maps carry over, nothing is fetched again.
    m.mount(frontend="fuse")
    st = m.status()
    before_present = st["bytes_present"]
    assert st["frontend"] == "fuse" and st["crawl"]["dirs_listed"] == 0
    assert {rel: file_state(m, rel) for rel in states} == states
    assert snapshot(m.mountpoint) == snapshot(src)
    assert read_all(os.path.join(m.mountpoint, "a", "other.bin")) == \
        read_all(os.path.join(src, "a", "other.bin"))
    assert read_all(os.path.join(m.mountpoint, DEEP)) == read_all(os.path.join(src, DEEP))
    assert pread_file(os.path.join(m.mountpoint, "big.bin"), MIB, 0) == \
        pread_file(os.path.join(src, "big.bin"), MIB, 0)
    # The first MiB came from the fanotify mount: nothing present was fetched again. (A
    # read from offset 0 is sequential: the Hydrator may read ahead beyond what is present,
    # in the background; that is all it may fetch. The kernel's own FUSE readahead may ask
    # past the MiB read and wait for that readahead: not a fetch of present data.)
    f = m.status()["fetch"]
    assert f["count"] == f["readahead"], f

    def fetched_only_what_was_missing():
        s = m.status()  # the index records readahead once it is durable
        return s["fetch"]["count"] == s["fetch"]["readahead"] and \
            s["bytes_present"] - before_present == s["fetch"]["bytes"]
    wait_for(fetched_only_what_was_missing, "readahead to be recorded")
    assert os.getxattr(os.path.join(m.mountpoint, "big.bin"), "user.fanhsm.state") == b"partial"
    # Now FUSE reads more: the small file and the rest of big.bin.
    assert read_all(os.path.join(m.mountpoint, "a", "b", "c", "small.txt")) == \
        read_all(os.path.join(src, "a", "b", "c", "small.txt"))
    assert read_all(os.path.join(m.mountpoint, "big.bin")) == read_all(os.path.join(src, "big.bin"))
    assert m.status()["fetch"]["count"] > 0
    for rel in ["a/b/c/small.txt", "big.bin"]:
        m.wait_durable(os.path.join(m.mountpoint, rel))
        assert file_state(m, rel)[0] == "full"
    assert m.umount().returncode == 0
    wait_for(lambda: not m.daemon_alive(), "the FUSE daemon to exit")

    # And back to fanotify: what FUSE fetched is present there too.
    m.mount(frontend="fanotify")
    assert m.status()["frontend"] == "fanotify"
    assert snapshot(m.mountpoint) == snapshot(src)
    assert content_hashes(m.mountpoint) == content_hashes(src)
    st = m.status()
    assert st["fetch"]["count"] == 0 and st["crawl"]["dirs_listed"] == 0
    assert st["files"]["full"] == st["files"]["total"]


@pytest.mark.frontend_only("fuse", reason="a killed fanotify daemon's view is detached by its "
                           "guard (test_killed_daemon_recovers_without_losing_or_corrupting)")
def test_killed_fuse_daemon_is_cleared_by_umount(mounter, small_src):
    src = small_src
    m = mounter(src)
    assert read_all(os.path.join(m.mountpoint, "a", "other.bin")) == \
        read_all(os.path.join(src, "a", "other.bin"))
    m.wait_durable(os.path.join(m.mountpoint, "a", "other.bin"))
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    view_of_dead_daemon(m)  # still mounted, ENOTCONN
    r = m.umount()
    assert r.returncode == 0, r.stderr
    assert "stale" in r.stderr and m.mountpoint in r.stderr and str(old) in r.stderr, r.stderr
    assert "died" in r.stdout and m.mountpoint in r.stdout, r.stdout
    assert m.mountpoint not in mounts_below(m.mountpoint)
    assert os.listdir(m.mountpoint) == []
    r = m.umount()  # nothing left to clear: a clear error
    assert r.returncode != 0 and "not mounted" in r.stderr, r.stderr
    # A new mount over the same cache: what was present stays present.
    m.mount()
    assert m.pid != old
    assert file_state(m, "a/other.bin")[0] == "full"
    assert read_all(os.path.join(m.mountpoint, "a", "other.bin")) == \
        read_all(os.path.join(src, "a", "other.bin"))
    assert m.status()["fetch"]["count"] == 0
    assert content_hashes(m.mountpoint) == content_hashes(src)


@pytest.mark.frontend_only("fuse", reason="a killed fanotify daemon leaves no mount to clear")
def test_killed_fuse_daemon_is_cleared_by_fusermount_or_the_next_mount(mounter, small_src):
    src = small_src
    m = mounter(src)
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    view_of_dead_daemon(m)
    # The next mount clears what the dead daemon left, and says so.
    r = m.mount()
    assert "stale" in r.stderr and m.mountpoint in r.stderr, r.stderr
    assert m.pid != old
    assert snapshot(m.mountpoint) == snapshot(src)
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    view_of_dead_daemon(m)
    # fusermount3 -u clears it too; fanhsm mount then drops the stale record.
    r = run(["fusermount3", "-u", m.mountpoint], check=False)
    assert r.returncode == 0, r.stderr
    assert m.mountpoint not in mounts_below(m.mountpoint)
    r = m.mount()
    assert "died" in r.stderr and m.mountpoint in r.stderr, r.stderr
    assert content_hashes(m.mountpoint) == content_hashes(src)


@pytest.mark.frontend_only("fuse", reason="a disconnected mount is a FUSE state")
def test_disconnected_mount_without_a_record_is_refused_with_a_hint(fanhsm, mounter, small_src,
                                                                    workdir, run_dir):
    m = mounter(small_src)
    old = m.pid
    os.kill(old, 9)
    wait_for(lambda: not is_fanhsm(old), "the killed daemon to exit")
    view_of_dead_daemon(m)
    for rec in os.listdir(run_dir):  # as if the registry had been lost (e.g. a reboot of /run)
        os.unlink(os.path.join(run_dir, rec))
    r = run([fanhsm, "mount", "--frontend", "fuse", "--cache", m.cache, small_src,
             m.mountpoint], check=False)
    assert r.returncode != 0
    assert "fusermount3 -u" in r.stderr and m.mountpoint in r.stderr, r.stderr
    r = subprocess.run(["fusermount3", "-u", m.mountpoint], stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    m.mount()
    assert snapshot(m.mountpoint) == snapshot(small_src)


@pytest.mark.frontend_only("fuse", reason="fanotify needs root; this is the FUSE frontend's "
                                          "unprivileged mount")
def test_an_ordinary_user_mounts_with_fuse(fanhsm, workdir):
    """Issue #16: `fanhsm mount --frontend fuse` as an ordinary user (like sshfs or rclone):
    records and cache in the user's own directories, the view owned by the user and for the
    user alone, `list`, `status` and `umount` work. Before: refused ("mount needs root").

    libfuse opens /dev/fuse itself before it falls back to fusermount3: a /dev/fuse only root
    may open (as on this test machine; Debian's udev makes it 0666) is opened up for the
    test and its mode restored after."""
    import json
    import stat as st_
    nobody = 65534
    home = os.path.join(workdir, "home")
    src, mp, runs = (os.path.join(home, d) for d in ("src", "mnt", "run"))
    data = rand_bytes(300_000, 61)
    write(os.path.join(src, "d", "f.bin"), data)
    os.makedirs(mp)
    os.makedirs(runs)
    os.chmod(workdir, 0o755)
    for dirpath, dirs, files in os.walk(home):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            os.chown(p, nobody, nobody)
    env = {k: v for k, v in os.environ.items() if k != "FANHSM_RUN_DIR"}
    env.update(HOME=home, FANHSM_RUN_DIR=runs)
    as_user = ["setpriv", "--reuid=%d" % nobody, "--regid=%d" % nobody, "--clear-groups"]

    def user(*cmd):
        return subprocess.run(as_user + list(cmd), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)
    fuse_mode = st_.S_IMODE(os.stat("/dev/fuse").st_mode)
    pid = None
    try:
        os.chmod("/dev/fuse", 0o666)
        r = user(fanhsm, "mount", "--frontend", "fanotify", src, mp)
        assert r.returncode != 0 and b"--frontend fuse" in r.stderr, r.stderr
        r = user(fanhsm, "mount", "--frontend", "fuse", src, mp)
        assert r.returncode == 0, r.stderr
        listed = json.loads(user(fanhsm, "list", "--json").stdout)
        assert [(e["mountpoint"], e["frontend"], e["state"]) for e in listed] == \
            [(mp, "fuse", "running")], listed
        pid = listed[0]["pid"]
        assert listed[0]["cache"].startswith(os.path.join(home, ".cache", "fanhsm") + "/")
        r = user("cat", os.path.join(mp, "d", "f.bin"))
        assert r.returncode == 0 and r.stdout == data, r.stderr
        r = user("stat", "-c", "%u:%g", os.path.join(mp, "d", "f.bin"))
        assert r.stdout.decode().strip() == "%d:%d" % (nobody, nobody)
        with pytest.raises(PermissionError):  # no allow_other: the user's alone, not root's
            os.listdir(mp)
        r = user(fanhsm, "umount", mp)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not is_fanhsm(pid), "the user's daemon to exit")
        assert not os.path.ismount(mp)
    finally:
        os.chmod("/dev/fuse", fuse_mode)
        if pid and is_fanhsm(pid):
            os.kill(pid, 9)
        if os.path.ismount(mp):
            subprocess.run(["umount", "-l", mp])
