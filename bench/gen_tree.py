#!/usr/bin/env python3
"""Generates a large source tree for the scale benchmark (bench/scale.py).

    gen_tree.py DIR --files 1000000 [--per-dir 100] [--fanout 100] [--big-every 1000]

Layout: DIR/dNNN/sNNN/fNNNN (top-level dirs, each with `fanout` subdirectories, each with
`per-dir` files), so 1,000,000 files at the defaults live in 10,000 leaf directories (plus
100 top-level ones). Every file's content is a function of its path (content_of), so a
reader can check bytes without the source: most files are a few dozen bytes (ext4 keeps
them inline in the inode with -O inline_data, so a 1 M-file tree needs no data blocks);
every `big-every`-th file is 256 KiB, to give range reads something to do.
Idempotent: files that exist with the right size are kept.
"""
import argparse
import os
import sys

BIG = 256 << 10


def content_of(rel, big):
    line = (rel + "\n").encode()
    if not big:
        return line
    reps = BIG // len(line) + 1
    return (line * reps)[:BIG]


def layout(files, per_dir, fanout):
    """Yields (relative dir, [relative file paths]) in creation order."""
    leaves = (files + per_dir - 1) // per_dir
    tops = (leaves + fanout - 1) // fanout
    n = 0
    for t in range(tops):
        for s in range(fanout):
            if n >= files:
                return
            d = "d%03d/s%03d" % (t, s)
            names = []
            for f in range(per_dir):
                if n >= files:
                    break
                names.append("%s/f%04d" % (d, f))
                n += 1
            yield d, names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=1000000)
    ap.add_argument("--per-dir", type=int, default=100)
    ap.add_argument("--fanout", type=int, default=100)
    ap.add_argument("--big-every", type=int, default=1000)
    a = ap.parse_args()
    n = 0
    for d, names in layout(a.files, a.per_dir, a.fanout):
        os.makedirs(os.path.join(a.dir, d), exist_ok=True)
        for rel in names:
            data = content_of(rel, a.big_every > 0 and n % a.big_every == 0)
            n += 1
            p = os.path.join(a.dir, rel)
            try:
                if os.lstat(p).st_size == len(data):
                    continue
            except FileNotFoundError:
                pass
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        if n % 100000 < a.per_dir:
            print("gen_tree: %d files" % n, file=sys.stderr, flush=True)
    print("gen_tree: %d files in %s" % (n, a.dir), file=sys.stderr)


if __name__ == "__main__":
    main()
