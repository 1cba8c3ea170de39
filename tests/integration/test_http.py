"""Issue #4: HTTP directory listings, mounted for real against real servers (nginx,
Apache, lighttpd, python's http.server) and a fault-injecting server, through the frontend
of the run (--frontend fanotify|fuse). Every check compares with the served tree, byte
for byte."""
import errno
import json
import mmap
import os
import random
import stat
import threading
import time

import pytest

from conftest import FAILURE_MEMORY_S, WAIT_S, changed_errno, run, wait_for
from servers import available, web_server
from tree_util import rand_bytes, read_all, write

MIB = 1 << 20


def make_tree(root):
    write(os.path.join(root, "big.bin"), rand_bytes(6 * MIB + 999, 21))
    write(os.path.join(root, "one-mib"), rand_bytes(MIB, 22))
    write(os.path.join(root, "empty"), b"")
    write(os.path.join(root, "with space & more.txt"), b"spaces\n")
    write(os.path.join(root, "caf\u00e9.txt"), b"unicode\n")
    for d in range(6):
        for f in range(5):
            write(os.path.join(root, "dir%d" % d, "sub", "f%d.txt" % f), ("%d-%d\n" % (d, f)).encode() * 50)
    os.makedirs(os.path.join(root, "emptydir"))
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for n in files:
            os.chmod(os.path.join(dirpath, n), 0o644)


def tree_of(root):
    """{relpath: ("dir",) | ("file", size)} without following links."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(dirpath, n), root)] = ("dir",)
        for n in files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = ("file", os.lstat(p).st_size)
    return out


@pytest.fixture
def served(workdir):
    root = os.path.join(workdir, "www")
    os.makedirs(root)
    make_tree(root)
    os.chmod(workdir, 0o755)  # servers run workers as unprivileged users
    return root


SERVERS = [("nginx", "json"), ("nginx", "html"), ("apache", "fancy"), ("apache", "table"),
           ("lighttpd", None), ("python", None), ("fault", None), ("fault", "no-ranges")]


@pytest.mark.parametrize("kind,variant", SERVERS, ids=["%s-%s" % s for s in SERVERS])
def test_http_tree_and_content_equal_source(mounter, served, workdir, kind, variant):
    if not available(kind):
        pytest.skip(kind + " not installed")
    with web_server(kind, served, workdir, variant) as url:
        m = mounter(url)
        m.wait_crawl()
        assert tree_of(m.mountpoint) == tree_of(served)
        for rel, kindsize in tree_of(served).items():
            if kindsize[0] == "file":
                assert read_all(os.path.join(m.mountpoint, rel)) == read_all(os.path.join(served, rel)), rel
        st = os.stat(os.path.join(m.mountpoint, "big.bin"))
        assert stat.S_IMODE(st.st_mode) == 0o444
        assert abs(st.st_mtime - os.stat(os.path.join(served, "big.bin")).st_mtime) < 61
        s = m.status()
        assert s["crawl"]["errors"] == 0 and s["events"]["denied"] == 0


def test_http_random_mmap_and_concurrent_reads(mounter, served, workdir):
    data = read_all(os.path.join(served, "big.bin"))
    with web_server("nginx", served, workdir, "json") as url:
        m = mounter(url)
        path = os.path.join(m.mountpoint, "big.bin")
        rng = random.Random(5)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(40):
                off, n = rng.randrange(len(data)), rng.choice([1, 4096, 70000, MIB + 1])
                assert os.pread(fd, n, off) == data[off:off + n]
        finally:
            os.close(fd)
        results, threads = [None] * 8, []
        for i in range(8):
            def reader(i=i):
                results[i] = read_all(os.path.join(m.mountpoint, "one-mib"))
            threads.append(threading.Thread(target=reader))
            threads[-1].start()
        for t in threads:
            t.join(WAIT_S)
        assert all(r == read_all(os.path.join(served, "one-mib")) for r in results)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == data


def test_http_only_what_is_read_is_fetched(mounter, workdir):
    root = os.path.join(workdir, "www")
    os.makedirs(root)
    os.chmod(workdir, 0o755)
    middle = rand_bytes(2 * MIB, 23)
    with open(os.path.join(root, "huge.bin"), "wb") as f:
        f.truncate(1 << 30)
        f.seek(511 * MIB)
        f.write(middle)
    os.chmod(os.path.join(root, "huge.bin"), 0o644)
    with web_server("nginx", root, workdir, "json") as url:
        m = mounter(url)
        fd = os.open(os.path.join(m.mountpoint, "huge.bin"), os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 512 * MIB + 100) == middle[MIB + 100:MIB + 4196]
        finally:
            os.close(fd)
        st = m.status(os.path.join(m.mountpoint, "huge.bin"))
        assert st["state"] == "partial" and 0 < st["bytes_present"] <= m.status()["chunk_size"]


def set_faults(path, faults):
    with open(path, "w") as f:
        json.dump(faults, f)



def test_http_faults_retried_or_eio_never_zeros(mounter, served, workdir, frontend):
    faults = os.path.join(workdir, "faults.json")
    set_faults(faults, {})
    data = {n: read_all(os.path.join(served, n)) for n in ["big.bin", "one-mib"]}
    with web_server("fault", served, workdir, faults) as url:
        m = mounter(url, extra=["--timeout", "3", "--retries", "2"])
        m.wait_crawl()
        mp = m.mountpoint

        def read_range(name, off, n):
            fd = os.open(os.path.join(mp, name), os.O_RDONLY)
            try:
                return os.pread(fd, n, off)
            finally:
                os.close(fd)

        # Transient 503s are retried: the read succeeds with the right bytes.
        set_faults(faults, {"/big.bin": {"status": 503, "count": 2}})
        assert read_range("big.bin", 100_000, 5000) == data["big.bin"][100_000:105_000]
        # A connection reset mid-body and a truncated body: resumed, bytes equal.
        set_faults(faults, {"/big.bin": {"reset_after": 70000, "count": 1}})
        assert read_range("big.bin", 2 * MIB + 7, 300_000) == data["big.bin"][2 * MIB + 7:2 * MIB + 300_007]
        set_faults(faults, {"/big.bin": {"truncate_after": 50000, "count": 1}})
        assert read_range("big.bin", 4 * MIB + 3, 10) == data["big.bin"][4 * MIB + 3:4 * MIB + 13]
        # Permanent failures: EIO in bounded time, never zeros.
        # A new ETag is another version of the file: changed_errno(); the rest is EIO.
        for fault, want in [({"status": 500}, errno.EIO), ({"wrong_range": True}, errno.EIO),
                            ({"etag_suffix": "-new"}, changed_errno(frontend)),
                            ({"status": 404}, errno.EIO)]:
            # A failed fetch is remembered for a second (issue #14): each fault must meet
            # the source itself, not the previous fault's remembered error.
            time.sleep(FAILURE_MEMORY_S + 0.2)
            set_faults(faults, {"/one-mib": fault})
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                read_range("one-mib", 5 * 4096, 100)
            assert e.value.errno == want, fault
            assert time.monotonic() - t0 < WAIT_S
        set_faults(faults, {})
        time.sleep(FAILURE_MEMORY_S + 0.2)
        assert read_range("one-mib", 5 * 4096, 100) == data["one-mib"][5 * 4096:5 * 4096 + 100]
        assert m.daemon_alive()
        # Offline: what is cached keeps working after the server is gone.
        assert read_all(os.path.join(mp, "one-mib")) == data["one-mib"]
        wait_for(lambda: m.status(os.path.join(mp, "one-mib"))["state"] == "full", "one-mib full")
    # The server is stopped now.
    assert read_all(os.path.join(mp, "one-mib")) == data["one-mib"]
    assert sorted(os.listdir(os.path.join(mp, "dir3", "sub"))) == ["f%d.txt" % i for i in range(5)]
    # Content never fetched fails with EIO. (A file never read: which ranges of big.bin the
    # reads above brought in depends on readahead, the kernel's included under FUSE.)
    never_read = os.path.join("dir2", "sub", "f3.txt")
    assert m.status(os.path.join(mp, never_read))["state"] == "empty"
    with pytest.raises(OSError) as e:
        read_all(os.path.join(mp, never_read))
    assert e.value.errno == errno.EIO
    assert m.status(os.path.join(mp, "big.bin"))["state"] == "partial"
    assert m.daemon_alive()


def test_http_server_down_at_mount_is_a_clear_error(fanhsm, cachefs, workdir, frontend):
    import subprocess
    from servers import free_port
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    r = subprocess.run([fanhsm, "mount", "--frontend", frontend, "--retries", "0", "--cache",
                        os.path.join(cachefs, os.path.basename(workdir), "down"),
                        "http://127.0.0.1:%d/" % free_port(), mp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=WAIT_S)
    assert r.returncode != 0
    assert "127.0.0.1" in r.stderr and "connect" in r.stderr.lower()
    assert not os.path.ismount(mp)


def test_ctrl_c_during_mount_stops_the_daemon(fanhsm, cachefs, workdir, frontend, run_dir):
    """Issue #16: Ctrl-C while `fanhsm mount` waited for a source that accepts connections
    and never answers killed the command silently and left its daemon running. Now the
    daemon is stopped, nothing stays mounted, and the command says so (exit 130)."""
    import signal
    import socket
    import subprocess
    mp = os.path.join(workdir, "mp")
    os.mkdir(mp)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepted by the kernel, never answered
    proc = None
    try:
        proc = subprocess.Popen(
            [fanhsm, "mount", "--frontend", frontend, "--retries", "0", "--timeout", "30",
             "--cache", os.path.join(cachefs, os.path.basename(workdir), "silent"),
             "http://127.0.0.1:%d/" % silent.getsockname()[1], mp],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def children(ppid):
            out = []
            for p in os.listdir("/proc"):
                if p.isdigit():
                    try:
                        st = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(st[1]) == ppid:
                        out.append(int(p))
            return out
        # The daemon (a child of the command) and its fetch worker wait for the source.
        daemons = wait_for(lambda: children(proc.pid), "the daemon to start")
        workers = wait_for(lambda: [w for d in daemons for w in children(d)], "its worker to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 130, (proc.returncode, err)
        assert "interrupted" in err and "stopped" in err, err
        from conftest import is_fanhsm
        wait_for(lambda: not any(is_fanhsm(p) for p in daemons + workers),
                 "the daemon and its worker to be gone", timeout=10)
        assert not os.path.ismount(mp)
        assert [f for f in os.listdir(run_dir) if f.endswith(".json")] == []
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)
        silent.close()


def test_offline_start_serves_the_cache(mounter, workdir):
    """Issue #16: `fanhsm mount` of an existing cache while the source is unreachable (a
    laptop, a boot before the network) failed. It now starts, says so, serves the listing
    and the content the cache holds, fails (EIO) reads of what it lacks, and serves those
    too once the source answers again. A new cache still refuses (see
    test_http_server_down_at_mount_is_a_clear_error)."""
    import signal
    import subprocess
    from servers import _wait_ready, free_port
    root = os.path.join(workdir, "www")
    data = {n: rand_bytes(size, seed) for n, size, seed in [("cached.bin", 300_000, 71),
                                                             ("other.bin", 200_000, 72)]}
    for n, d in data.items():
        write(os.path.join(root, "d", n), d)
    port = free_port()
    url = "http://127.0.0.1:%d/" % port
    log = os.path.join(workdir, "server.log")
    servers = []

    def serve():
        with open(log, "a") as out:
            proc = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1",
                                     "--directory", root, str(port)], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        servers.append(proc)
        _wait_ready(url, proc, log)
        return proc

    def stop(proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT_S)
    try:
        server = serve()
        m = mounter(url, extra=["--timeout", "3", "--retries", "0"])
        m.wait_crawl()
        d = os.path.join(m.mountpoint, "d")
        assert read_all(os.path.join(d, "cached.bin")) == data["cached.bin"]
        m.wait_durable(os.path.join(d, "cached.bin"))
        assert m.umount().returncode == 0
        stop(server)
        r = m.mount()  # the source is down now
        assert "unreachable" in r.stderr and "serving what the cache holds" in r.stderr, r.stderr
        assert m.status()["crawl"]["started_offline"]
        assert sorted(os.listdir(d)) == ["cached.bin", "other.bin"]
        assert read_all(os.path.join(d, "cached.bin")) == data["cached.bin"]
        with pytest.raises(OSError) as e:
            read_all(os.path.join(d, "other.bin"))
        assert e.value.errno == errno.EIO
        serve()  # back, on the same address

        def other():
            try:
                return read_all(os.path.join(d, "other.bin")) == data["other.bin"]
            except OSError:
                return False  # a failure is remembered for a second (FAILURE_MEMORY_S)
        wait_for(other, "other.bin once the source answers again")
    finally:
        for proc in servers:
            if proc.poll() is None:
                stop(proc)


def test_http_credentials_never_logged(mounter, served, workdir):
    with web_server("python", served, workdir) as url:
        secret_url = url.replace("http://", "http://alice:s3cr3t-pw@")
        m = mounter(secret_url)
        assert "s3cr3t" not in json.dumps(m.status())
        log = open(os.path.join(m.cache, "meta", "fanhsm.log")).read()
        assert "s3cr3t" not in log
        assert read_all(os.path.join(m.mountpoint, "empty")) == b""


def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().decode(errors="replace")


@pytest.mark.skipif(not available("nginx"), reason="nginx not installed")
def test_http_secrets_are_not_in_any_process_arguments(mounter, served, workdir, fanhsm):
    """Issue #15, item 1: --user, a URL's user:password@ and --header values were in the
    daemon's /proc/PID/cmdline (what `ps` shows every local user) for its whole life. Now they
    are overwritten once parsed; --credentials FILE (0600, the caller's) keeps them out of
    argv altogether, and a file others may read is refused."""
    from servers import AUTH_PASSWORD, AUTH_USER
    with web_server("nginx", served, workdir, "json-auth") as url:
        expected = read_all(os.path.join(served, "one-mib"))
        secret_url = url.replace("http://", "http://%s:%s@" % (AUTH_USER, AUTH_PASSWORD))
        for extra, source in [(["--user", "%s:%s" % (AUTH_USER, AUTH_PASSWORD),
                                "-H", "X-Api-Key: tok-98765"], url),
                              (["--header=X-Api-Key: tok-98765"], secret_url)]:
            m = mounter(source, extra=extra)
            assert read_all(os.path.join(m.mountpoint, "one-mib")) == expected  # authenticated
            for pid in {m.pid, m.status()["worker"]["pid"]}:
                cmd = _cmdline(pid)
                assert AUTH_PASSWORD not in cmd and "tok-98765" not in cmd, cmd
                assert "X-Api-Key:" in cmd or "__worker" in cmd  # the header's name stays
            m.cleanup()
        cred = os.path.join(workdir, "cred")
        with open(cred, "w") as f:
            f.write("%s:%s\n" % (AUTH_USER, AUTH_PASSWORD))
        os.chmod(cred, 0o644)
        refused = run([fanhsm, "mount", "--credentials", cred, url, os.path.join(workdir, "mp")],
                      check=False)
        assert refused.returncode != 0 and "chmod 600" in refused.stderr, refused.stderr
        os.chmod(cred, 0o600)
        m = mounter(url, extra=["--credentials", cred])
        assert read_all(os.path.join(m.mountpoint, "one-mib")) == expected
        assert AUTH_PASSWORD not in _cmdline(m.pid)


def test_http_one_bad_entry_leaves_its_directory_listable(mounter, workdir):
    """Issue #14, item 9: over HTML listings one file answering HEAD with 403 made its whole
    directory unlistable, and at the root the mount failed. Now that file is left out (and
    logged) and the rest is served byte for byte."""
    www = os.path.join(workdir, "www")
    good = rand_bytes(50_000, 72)
    for d in ("", "sub"):
        write(os.path.join(www, d, "good.bin"), good)
        write(os.path.join(www, d, "forbidden.bin"), b"secret")
    faults = os.path.join(workdir, "faults.json")
    with open(faults, "w") as f:
        json.dump({"/forbidden.bin": {"status": 403}, "/sub/forbidden.bin": {"status": 403}}, f)
    os.chmod(workdir, 0o755)
    with web_server("fault", www, workdir, faults) as url:
        m = mounter(url)  # before: the mount failed (the root could not be listed)
        for d in ("", "sub"):
            names = sorted(os.listdir(os.path.join(m.mountpoint, d)))
            assert names == (["good.bin", "sub"] if d == "" else ["good.bin"]), names
            assert read_all(os.path.join(m.mountpoint, d, "good.bin")) == good
        assert "forbidden.bin: HEAD: HTTP 403" in m.log_tail(200)


def test_http_redirects_stay_within_the_source(mounter, workdir):
    """Issue #15, item 4: a source redirected the worker anywhere curl would go, custom
    headers included (an API key to another host, or a request to a 127.0.0.1 service served
    as the file's content when the size matched). Now only same-origin redirects are
    followed: one to another origin (here another port) fails that file, and the other
    server sees no request at all."""
    www = os.path.join(workdir, "www")
    inner = os.path.join(workdir, "inner")
    data = rand_bytes(300_000, 70)
    write(os.path.join(www, "leaky.bin"), data)
    # The same content, size and mtime: the server gives both the same ETag, so the version
    # listed for moved.bin is the one the redirect reaches.
    write(os.path.join(www, "moved.bin"), data, mtime_ns=1_700_000_000_000_000_000)
    write(os.path.join(www, "real.bin"), data, mtime_ns=1_700_000_000_000_000_000)
    write(os.path.join(inner, "leaky.bin"), data)  # the size matches: it would be served
    os.chmod(workdir, 0o755)
    faults = os.path.join(workdir, "faults.json")
    with web_server("python", inner, workdir) as inner_url:
        with open(faults, "w") as f:
            json.dump({"/leaky.bin": {"redirect": inner_url + "leaky.bin"},
                       "/moved.bin": {"redirect": "/real.bin"}}, f)
        with web_server("fault", www, workdir, faults) as url:
            m = mounter(url, extra=["-H", "X-Api-Key: tok-4242"])
            assert read_all(os.path.join(m.mountpoint, "moved.bin")) == data  # same origin
            with pytest.raises(OSError) as e:
                read_all(os.path.join(m.mountpoint, "leaky.bin"))
            assert e.value.errno in (errno.EIO, errno.EACCES)
            assert "another origin" in m.log_tail(200)
    inner_log = open(os.path.join(workdir, "python-default", "stdout.log")).read()
    assert "leaky.bin" not in inner_log, inner_log


@pytest.mark.skipif(not available("nginx"), reason="nginx not installed")
def test_http_https_source_never_follows_a_redirect_down_to_http(mounter, workdir):
    """Issue #15, item 4: https -> http redirects were followed (credentials and headers in
    clear on the way). An https source (nginx, self-signed, --insecure) redirecting one file
    to http: that file fails, the other one reads byte for byte, the http server sees no
    request."""
    www = os.path.join(workdir, "www")
    data = rand_bytes(40_000, 73)
    write(os.path.join(www, "good.bin"), data)
    write(os.path.join(www, "down.bin"), data)
    os.chmod(workdir, 0o755)
    with web_server("python", www, workdir) as plain:
        d = os.path.join(workdir, "nginx-json-tls")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "extra.conf"), "w") as f:
            f.write("location = /down.bin { return 302 %sdown.bin; }\n" % plain)
        with web_server("nginx", www, workdir, "json-tls") as url:
            assert url.startswith("https://")
            m = mounter(url, extra=["--insecure", "-H", "X-Api-Key: tok-777"])
            assert read_all(os.path.join(m.mountpoint, "good.bin")) == data
            assert "down.bin" in os.listdir(m.mountpoint)  # nginx's JSON listing names it
            with pytest.raises(OSError):
                read_all(os.path.join(m.mountpoint, "down.bin"))
            assert "never from https to http" in m.log_tail(200)
    assert "down.bin" not in open(os.path.join(workdir, "python-default", "stdout.log")).read()


@pytest.mark.skipif(not available("nginx"), reason="nginx not installed")
def test_http_netrc_and_environment_credentials(mounter, served, workdir):
    """Issue #15, items 1 and 2: with --netrc the network-facing worker kept
    CAP_DAC_READ_SEARCH (read any file) so that curl could read ~/.netrc. Now the CLI reads
    it (as the user who mounts) and the worker has no capability at all. Scripts may give
    FANHSM_CREDENTIALS instead of an argument."""
    from servers import AUTH_PASSWORD, AUTH_USER
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    with open(os.path.join(home, ".netrc"), "w") as f:
        f.write("machine 127.0.0.1 login %s password %s\n" % (AUTH_USER, AUTH_PASSWORD))
    os.chmod(os.path.join(home, ".netrc"), 0o600)
    expected = read_all(os.path.join(served, "one-mib"))
    old_home = os.environ.get("HOME")
    with web_server("nginx", served, workdir, "json-auth") as url:
        os.environ["HOME"] = home
        try:
            m = mounter(url, extra=["--netrc"])
        finally:
            os.environ["HOME"] = old_home or "/root"
        assert read_all(os.path.join(m.mountpoint, "one-mib")) == expected
        st = open("/proc/%d/status" % m.status()["worker"]["pid"]).read()
        capeff = [int(line.split()[1], 16) for line in st.splitlines() if line.startswith("CapEff:")][0]
        assert capeff == 0, hex(capeff)
        m.cleanup()
        os.environ["FANHSM_CREDENTIALS"] = "%s:%s" % (AUTH_USER, AUTH_PASSWORD)
        try:
            m = mounter(url)
        finally:
            del os.environ["FANHSM_CREDENTIALS"]
        assert read_all(os.path.join(m.mountpoint, "one-mib")) == expected


def test_http_server_without_ranges_streams_each_file_once(mounter, workdir):
    root = os.path.join(workdir, "www")
    data = rand_bytes(40 * MIB + 3, 24)
    write(os.path.join(root, "stream.bin"), data)
    os.chmod(os.path.join(root, "stream.bin"), 0o644)
    os.chmod(workdir, 0o755)
    with web_server("fault", root, workdir, "no-ranges") as url:
        m = mounter(url)
        fd = os.open(os.path.join(m.mountpoint, "stream.bin"), os.O_RDONLY)
        try:
            # A read in the middle first: the server answers with the whole file.
            assert os.pread(fd, 5000, 20 * MIB) == data[20 * MIB:20 * MIB + 5000]
            got = b"".join(os.pread(fd, MIB, off) for off in range(0, len(data), MIB))
        finally:
            os.close(fd)
        assert got == data
        # Not one request per chunk (41 here, each of which would stream the prefix again).
        # How the reads, the streams and readahead interleave varies with the machine's load:
        # 3 requests when idle, 5 seen under load; never a byte twice.
        f = m.status()["fetch"]
        assert f["count"] <= 6 and f["bytes"] == len(data), f


def test_http_listing_revalidation_after_ttl(mounter, served, workdir, frontend):
    with web_server("nginx", served, workdir, "json") as url:
        m = mounter(url, extra=["--listing-ttl", "1"])
        m.wait_crawl()
        mp = m.mountpoint
        old_fd = os.open(os.path.join(mp, "big.bin"), os.O_RDONLY)
        try:
            assert os.pread(old_fd, 10, 3 * MIB + 1) == read_all(os.path.join(served, "big.bin"))[3 * MIB + 1:3 * MIB + 11]
            # The server's tree changes: a new file, a removed file and directory, a file
            # rewritten with other content and size.
            write(os.path.join(served, "added.txt"), b"new on the server\n")
            os.chmod(os.path.join(served, "added.txt"), 0o644)
            os.unlink(os.path.join(served, "one-mib"))
            os.unlink(os.path.join(served, "dir5", "sub", "f0.txt"))
            new_big = rand_bytes(2 * MIB + 5, 99)
            write(os.path.join(served, "big.bin"), new_big)
            os.chmod(os.path.join(served, "big.bin"), 0o644)
            # Within the TTL the cached listing is served; after it, the next open revalidates.
            time.sleep(1.2)
            names = sorted(os.listdir(mp))
            assert "added.txt" in names and "one-mib" not in names
            assert "f0.txt" not in os.listdir(os.path.join(mp, "dir5", "sub"))
            assert read_all(os.path.join(mp, "added.txt")) == b"new on the server\n"
            assert os.stat(os.path.join(mp, "big.bin")).st_size == len(new_big)
            assert read_all(os.path.join(mp, "big.bin")) == new_big
            # A reader still holding the old version never gets the new bytes mixed in.
            with pytest.raises(OSError) as e:
                os.pread(old_fd, 10, 5 * MIB)
            assert e.value.errno == changed_errno(frontend)
        finally:
            os.close(old_fd)
        st = m.status()["crawl"]
        assert st["revalidated"] >= 1 and st["removed"] >= 2
