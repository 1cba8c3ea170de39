"""Generated data: served from a tmpfs (what a remote has; page-cache drops do not touch it),
with native copies on the cache filesystem for the native limit."""
import os
import random

from .env import MIB, log, sh


def write_random(path, nbytes):
    with open(path, "wb") as f:
        left = nbytes
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n


def small_tree(root, files, rng):
    """`files` files of 1..32 KiB in directories of 100."""
    for i in range(files):
        d = os.path.join(root, "d%03d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(d)
        write_random(os.path.join(d, "f%05d" % i), rng.randint(1, 32) * 1024)


def entry_tree(root, entries):
    """`entries` empty files, 100 per directory, 100 directories per parent."""
    per_top = 100 * 100
    for i in range(entries):
        d = os.path.join(root, "a%03d" % (i // per_top), "b%03d" % (i // 100 % 100))
        if i % 100 == 0:
            os.makedirs(d)
        os.close(os.open(os.path.join(d, "e%02d" % (i % 100)), os.O_CREAT | os.O_WRONLY, 0o644))


def tar_gz(path, mib, scratch):
    """A .tar.gz of ~mib MiB: 64 members, mostly incompressible."""
    src = os.path.join(scratch, "tarsrc")
    os.makedirs(src)
    per = max(1, mib // 64)
    for i in range(64):
        write_random(os.path.join(src, "part%02d.bin" % i), per * MIB)
    sh("tar cf - -C %s . | gzip -1 > %s" % (src, path))
    sh(["rm", "-rf", src])


def zip_file(path, mib, scratch):
    """A stored zip with 2000 small members and 4 large ones: `unzip -l` needs its directory."""
    src = os.path.join(scratch, "zipsrc")
    os.makedirs(src)
    for i in range(2000):
        with open(os.path.join(src, "small%04d.txt" % i), "w") as f:
            f.write("member %d\n" % i * 20)
    for i in range(4):
        write_random(os.path.join(src, "large%d.bin" % i), mib * MIB // 4)
    sh(["zip", "-q", "-0", "-r", path, "."], cwd=src)
    sh(["rm", "-rf", src])


def generate(www, native, scratch, p):
    """Writes everything the scenarios read into www (served) and native (limit copies)."""
    rng = random.Random(5)
    log("generating %d MiB file, %d small files, %d-entry tree..." % (p.big_mib, p.small_files, p.tree_entries))
    write_random(os.path.join(www, "big.bin"), p.big_mib * MIB)
    small_tree(os.path.join(www, "small"), p.small_files, rng)
    entry_tree(os.path.join(www, "tree"), p.tree_entries)
    if p.huge_entries:
        log("generating %d-entry tree..." % p.huge_entries)
        entry_tree(os.path.join(www, "huge"), p.huge_entries)
    log("generating %d MiB .tar.gz and %d MiB zip..." % (p.tar_mib, p.zip_mib))
    tar_gz(os.path.join(www, "archive.tar.gz"), p.tar_mib, scratch)
    zip_file(os.path.join(www, "bundle.zip"), p.zip_mib, scratch)
    log("copying the limit data to the cache filesystem...")
    os.makedirs(native)
    for n in ("big.bin", "small", "tree"):
        sh(["cp", "-a", os.path.join(www, n), native], timeout=1200)
    sh(["sync"], timeout=600)
