#!/usr/bin/env python3
"""Regenerates tests/corpus/listings/ from real servers (run by hand, as root):
a sample tree with awkward names is served by nginx (html exact/approximate, json),
Apache (fancy, plain, table), lighttpd and python's http.server; each listing page is
saved with the base URL it came from and the expected entries, taken from the tree
itself (name, d/f, size, mtime) — not from any parser."""
import os
import shutil
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from servers import web_server  # noqa: E402

SERVERS = [("nginx", "html"), ("nginx", "html-approx"), ("nginx", "json"), ("apache", "fancy"),
           ("apache", "plain"), ("apache", "table"), ("lighttpd", None), ("python", None)]


def make_tree(root):
    os.makedirs(os.path.join(root, "sub dir"))
    os.makedirs(os.path.join(root, "d2"))
    files = {"one": b"x", "empty": b"", "k1023": b"k" * 1023, "m1": b"m" * 1048577,
             "with space.txt": b"a\n", "caf\u00e9 \u65e5\u672c.txt": b"b\n",
             "amp&hash#pct%plus+q?.txt": b"c\n", "quote'dq\"lt<.txt": b"d\n", "L" * 200: b"e\n",
             os.path.join("sub dir", "inner.txt"): b"f\n"}
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    t = 1_700_000_000
    for i, name in enumerate(sorted(os.listdir(root))):
        os.utime(os.path.join(root, name), (t + i * 3661, t + i * 3661))


def main():
    out_dir = os.path.join(HERE, "listings")
    work = tempfile.mkdtemp(prefix="capture.", dir="/var/tmp")
    try:
        root = os.path.join(work, "tree")
        os.makedirs(root)
        os.chmod(work, 0o755)
        make_tree(root)
        for dirpath, dirs, files in os.walk(work):
            for n in dirs + files:
                os.chmod(os.path.join(dirpath, n), 0o755 if n in dirs else 0o644)
        expected = []
        for name in sorted(os.listdir(root)):
            st = os.stat(os.path.join(root, name))
            isdir = os.path.isdir(os.path.join(root, name))
            expected.append("%s\t%s\t%s\t%d" % (name, "d" if isdir else "f",
                                                "-" if isdir else st.st_size, int(st.st_mtime)))
        for kind, variant in SERVERS:
            name = kind + ("-" + variant if variant else "")
            with web_server(kind, root, work, variant) as url:
                resp = urllib.request.urlopen(url)
                body = resp.read()
                ctype = resp.headers.get("Content-Type", "")
            case = os.path.join(out_dir, name)
            os.makedirs(case, exist_ok=True)
            ext = "json" if "json" in ctype else "html"
            with open(os.path.join(case, "page." + ext), "wb") as f:
                f.write(body)
            with open(os.path.join(case, "meta"), "w") as f:
                f.write("url\t%s\ncontent-type\t%s\n" % (url, ctype))
            with open(os.path.join(case, "expected"), "w") as f:
                f.write("\n".join(expected) + "\n")
            print("captured %s (%d bytes)" % (name, len(body)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
