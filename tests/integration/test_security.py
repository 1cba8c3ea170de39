"""Issue #15: the view grants what the source grants. Owners, groups and modes of a local
source are those of the view; content from an HTTP source that needed credentials is not
readable by other local users unless the mount says so (--file-mode, --dir-mode, --uid,
--gid). Checked by reading through the mount as other users (setpriv), byte for byte."""
import os
import stat
import subprocess

import pytest

from conftest import WAIT_S
from servers import AUTH_PASSWORD, AUTH_USER, available, web_server
from tree_util import rand_bytes, read_all, write

NOBODY = 65534
OTHER = 12345  # a uid no account has


def read_as(uid, path):
    """(exit status, bytes read) of `cat path` run as uid:uid with no other groups."""
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                        "cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=WAIT_S)
    return r.returncode, r.stdout


@pytest.fixture
def open_workdir(workdir):
    os.chmod(workdir, 0o755)  # other users must reach the mount point
    return workdir


def test_local_source_owners_and_modes_are_the_views(mounter, open_workdir):
    """Before: every entry of a local source was root:root with its mode kept, so an owner
    could not read their own 0600 file through the view, and a group's file was anyone's
    whose uid happened to match nothing."""
    root = os.path.join(open_workdir, "src")
    mine = rand_bytes(100_000, 61)
    write(os.path.join(root, "home", "nobody-only.bin"), mine, mode=0o600)
    os.chown(os.path.join(root, "home", "nobody-only.bin"), NOBODY, NOBODY)
    write(os.path.join(root, "public.bin"), rand_bytes(1000, 62), mode=0o644)
    os.chmod(os.path.join(root, "home"), 0o755)
    os.chmod(root, 0o755)
    m = mounter(root)
    m.wait_crawl()
    view = os.path.join(m.mountpoint, "home", "nobody-only.bin")
    st = os.stat(view)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    assert read_as(NOBODY, view) == (0, mine)  # the owner reads their file
    code, out = read_as(OTHER, view)
    assert code != 0 and out == b""  # nobody else does
    assert read_as(OTHER, os.path.join(m.mountpoint, "public.bin"))[0] == 0


@pytest.mark.frontend_only("fanotify", reason="the FUSE frontend does not enable POSIX ACLs "
                                              "(FUSE_POSIX_ACL): its permission checks use modes")
def test_local_source_acls_are_the_views(mounter, open_workdir):
    """Before: a file an ACL denies to a user was readable by that user through the view
    (the ACL was not mirrored, and the mode alone granted it)."""
    root = os.path.join(open_workdir, "src")
    data = rand_bytes(3000, 65)
    write(os.path.join(root, "acl.bin"), data, mode=0o644)
    write(os.path.join(root, "granted.bin"), data, mode=0o600)
    os.chmod(root, 0o755)
    subprocess.run(["setfacl", "-m", "u:%d:---" % OTHER, os.path.join(root, "acl.bin")], check=True)
    subprocess.run(["setfacl", "-m", "u:%d:r" % OTHER, os.path.join(root, "granted.bin")], check=True)
    m = mounter(root)
    m.wait_crawl()
    assert read_as(OTHER, os.path.join(root, "acl.bin"))[0] != 0  # the source denies it
    assert read_as(OTHER, os.path.join(m.mountpoint, "acl.bin"))[0] != 0  # so does the view
    assert read_as(NOBODY, os.path.join(m.mountpoint, "acl.bin")) == (0, data)
    assert read_as(OTHER, os.path.join(m.mountpoint, "granted.bin")) == (0, data)  # ACL grants
    assert read_as(NOBODY, os.path.join(m.mountpoint, "granted.bin"))[0] != 0


def test_mount_options_set_owner_and_modes(mounter, open_workdir):
    root = os.path.join(open_workdir, "src")
    data = rand_bytes(5000, 63)
    write(os.path.join(root, "d", "f.bin"), data, mode=0o644)
    os.chmod(os.path.join(root, "d"), 0o755)
    os.chmod(root, 0o755)
    m = mounter(root, extra=["--uid", str(OTHER), "--gid", str(OTHER), "--file-mode", "0400",
                             "--dir-mode", "0500"])
    m.wait_crawl()
    view = os.path.join(m.mountpoint, "d", "f.bin")
    st = os.stat(view)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER, OTHER, 0o400)
    assert stat.S_IMODE(os.stat(os.path.join(m.mountpoint, "d")).st_mode) == 0o500
    assert read_as(OTHER, view) == (0, data)
    assert read_as(NOBODY, view)[0] != 0


@pytest.mark.skipif(not available("nginx"), reason="nginx not installed")
def test_content_of_an_authenticated_source_is_not_every_users(mounter, open_workdir):
    """Before: an HTTP source behind basic auth showed 0444 files and 0555 directories:
    root lent its credentials to every local account. Now group and other bits are off
    unless the mount gives modes; a source without credentials stays readable by all."""
    root = os.path.join(open_workdir, "www")
    data = rand_bytes(20_000, 64)
    write(os.path.join(root, "dir", "f.bin"), data, mode=0o644)
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
    with web_server("nginx", root, open_workdir, "json-auth") as url:
        m = mounter(url, extra=["--user", "%s:%s" % (AUTH_USER, AUTH_PASSWORD)])
        view = os.path.join(m.mountpoint, "dir", "f.bin")
        assert read_all(view) == data  # root, the mount's owner
        assert stat.S_IMODE(os.stat(view).st_mode) == 0o400
        assert stat.S_IMODE(os.stat(os.path.join(m.mountpoint, "dir")).st_mode) == 0o500
        code, out = read_as(NOBODY, view)
        assert code != 0 and out == b""
        m.cleanup()
        shared = mounter(url, extra=["--user", "%s:%s" % (AUTH_USER, AUTH_PASSWORD),
                                     "--file-mode", "0444", "--dir-mode", "0555"])
        assert read_as(NOBODY, os.path.join(shared.mountpoint, "dir", "f.bin")) == (0, data)
    with web_server("nginx", root, open_workdir, "json") as url:
        public = mounter(url)
        assert read_as(NOBODY, os.path.join(public.mountpoint, "dir", "f.bin")) == (0, data)
