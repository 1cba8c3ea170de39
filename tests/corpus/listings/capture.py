#!/usr/bin/env python3
"""Regenerates the real-server part of tests/corpus/listings/ (run by hand; needs the
packages in scripts/deps-http.txt).

A tree with awkward names is built under a work dir; nginx (autoindex html with exact sizes
on and off, json), Apache (fancy <pre>, plain, HTMLTable), lighttpd (mod_dirlisting) and
python3 -m http.server each serve it from their own configuration on 127.0.0.1 and a free
port, and are stopped by pid. For each listed directory (case) we save

  <server>/<case>.html|.json   the page, as curl received it
  <server>/<case>.url          the base URL it was fetched from
  <server>/<case>.expected     name<TAB>d|f<TAB>size-or-?<TAB>mtime-or-?  per entry

The expected lines come from the filesystem tree, never from a parser. A size is given
where the server prints it exactly (see EXACT_SIZE), an mtime (seconds, UTC) where the
server prints a time at all; servers that print minutes only are compared to the minute.

Usage: capture.py [work-dir]   (default /tmp/listing-work)
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))

# Which sizes each server prints as exact byte counts (from the servers' sources and checked
# against the captured pages): nginx exact_size off prints bytes up to 9999 and K/M/G above,
# Apache prints bytes below 973 and 1.0K etc. above, lighttpd always prints "0.1K" style.
EXACT_SIZE = {
    "nginx-html-exact": lambda n: True,
    "nginx-json": lambda n: True,
    "nginx-html-approx": lambda n: n <= 9999,
    "apache-fancy": lambda n: n < 973,
    "apache-table": lambda n: n < 973,
    "apache-plain": lambda n: False,
    "lighttpd": lambda n: False,
    "python": lambda n: False,
}
PRINTS_MTIME = {"nginx-html-exact", "nginx-html-approx", "nginx-json", "apache-fancy",
                "apache-table", "lighttpd"}

# case name -> directory (relative to the served root), each listed by every server.
CASES = {"root": "", "sub": "sub \u00e9 dir", "empty": "empty dir"}


def build_tree(root):
    files = {
        "empty": 0, "one": 1, "b972": 972, "b973": 973, "k1023": 1023, "k9999": 9999,
        "k10000": 10000, "m1048577": 1048577,
        "with space.txt": 2, "caf\u00e9 \u65e5\u672c.txt": 3, "amp&hash#pct%plus+q?.txt": 4,
        "quote'dq\"lt<gt>.txt": 5, "a:colon.txt": 6, "semi;eq=tilde~.txt": 7,
        "back\\slash": 8, "L" * 240 + ".dat": 9, "\u65e5\u672c" * 40: 10,
        "sub \u00e9 dir/inner.txt": 11, "sub \u00e9 dir/x&y z.txt": 12,
    }
    dirs = ["sub \u00e9 dir", "sub \u00e9 dir/nested", "empty dir", "d2"]
    for d in dirs:
        os.makedirs(os.path.join(root, d))
    for name, size in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"x" * size)
    # Distinct mtimes with non-zero seconds, children before their directories.
    t = 1700000000
    paths = sorted(files) + sorted(dirs, key=lambda p: -p.count("/"))
    for i, p in enumerate(paths):
        stamp = t + i * 3661 + 17
        os.utime(os.path.join(root, p), (stamp, stamp))
    for dirpath, dnames, fnames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for n in fnames:
            os.chmod(os.path.join(dirpath, n), 0o644)


def expected_lines(server, directory):
    lines = []
    for name in sorted(os.listdir(directory)):  # code point order == UTF-8 byte order
        st = os.lstat(os.path.join(directory, name))
        is_dir = os.path.isdir(os.path.join(directory, name))
        size = "?" if is_dir or not EXACT_SIZE[server](st.st_size) else str(st.st_size)
        mtime = str(int(st.st_mtime)) if server in PRINTS_MTIME else "?"
        lines.append("%s\t%s\t%s\t%s" % (name, "d" if is_dir else "f", size, mtime))
    return lines


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(d, port, root, variant):
    exact = "off" if variant == "approx" else "on"
    fmt = "json" if variant == "json" else "html"
    return ["/usr/sbin/nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")], "nginx.conf", f"""
user root;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp-body; proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fcgi; uwsgi_temp_path {d}/tmp-uwsgi; scgi_temp_path {d}/tmp-scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ autoindex on; autoindex_exact_size {exact}; autoindex_format {fmt}; }}
  }}
}}
"""


def apache_conf(d, port, root, variant):
    m = "/usr/lib/apache2/modules"
    opts = {"fancy": "FancyIndexing", "plain": "-FancyIndexing",
            "table": "FancyIndexing HTMLTable"}[variant]
    return ["/usr/sbin/apache2", "-f", os.path.join(d, "httpd.conf"), "-DFOREGROUND"], \
        "httpd.conf", f"""
ServerRoot {d}
DefaultRuntimeDir {d}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule dir_module {m}/mod_dir.so
LoadModule autoindex_module {m}/mod_autoindex.so
LoadModule mime_module {m}/mod_mime.so
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
User www-data
Group www-data
TypesConfig /etc/mime.types
DocumentRoot "{root}"
<Directory "{root}">
  Options +Indexes
  Require all granted
  IndexOptions {opts} NameWidth=* Charset=UTF-8
</Directory>
"""


def lighttpd_conf(d, port, root, variant):
    return ["/usr/sbin/lighttpd", "-D", "-f", os.path.join(d, "lighttpd.conf")], \
        "lighttpd.conf", f"""
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.modules += ( "mod_dirlisting" )
dir-listing.activate = "enable"
dir-listing.encoding = "utf-8"
mimetype.assign = ( "" => "application/octet-stream" )
"""


SERVERS = [
    ("nginx-html-exact", nginx_conf, "exact", "html"),
    ("nginx-html-approx", nginx_conf, "approx", "html"),
    ("nginx-json", nginx_conf, "json", "json"),
    ("apache-fancy", apache_conf, "fancy", "html"),
    ("apache-plain", apache_conf, "plain", "html"),
    ("apache-table", apache_conf, "table", "html"),
    ("lighttpd", lighttpd_conf, None, "html"),
    ("python", None, None, "html"),
]


def curl(url):
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", url],
                          check=True, capture_output=True).stdout


def wait_ready(url, proc):
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        if subprocess.run(["curl", "-s", "-o", "/dev/null", url]).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError("server at %s not ready" % url)


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/listing-work"
    root = os.path.join(work, "tree")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    build_tree(root)
    env = dict(os.environ, TZ="UTC")  # Apache and lighttpd print local time
    for server, conf, variant, ext in SERVERS:
        d = os.path.join(work, server)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        port = free_port()
        if conf is None:
            cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                   root, str(port)]
        else:
            cmd, name, text = conf(d, port, root, variant)
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        log = open(os.path.join(d, "server.log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base = "http://127.0.0.1:%d/" % port
            wait_ready(base, proc)
            out = os.path.join(HERE, server)
            os.makedirs(out, exist_ok=True)
            for case, rel in CASES.items():
                url = base + (urllib.parse.quote(rel) + "/" if rel else "")
                with open(os.path.join(out, case + "." + ext), "wb") as f:
                    f.write(curl(url))
                with open(os.path.join(out, case + ".url"), "w") as f:
                    f.write(url + "\n")
                with open(os.path.join(out, case + ".expected"), "w") as f:
                    lines = expected_lines(server, os.path.join(root, rel))
                    f.write("".join(line + "\n" for line in lines))
                print("captured %s/%s from %s" % (server, case, url))
        finally:
            proc.terminate()  # by pid; nginx and Apache stop their workers themselves
            proc.wait(timeout=20)
            log.close()


if __name__ == "__main__":
    main()
