#!/usr/bin/env python3
"""A small HTTP server for fanhsm's tests: serves a directory with Range support, ETags
and an HTML index, and injects faults on request.

    fault_http_server.py ROOT [--faults FILE] [--no-ranges] [--rate BYTES_PER_S]

Binds 127.0.0.1 on a free port and prints "PORT <n>" on stdout once listening.
FILE (re-read on every request) is JSON mapping a URL path (e.g. "/dir/file.bin") to a fault:
  {"status": 503, "count": 2}       answer 503 to the next 2 requests for that path
  {"reset_after": 65536}            close the connection after that many body bytes
  {"truncate_after": 65536}         end the body early but keep the announced length
  {"delay_ms": 300}                 wait before answering
  {"wrong_range": true}             answer 206 with a Content-Range off by 4096
  {"etag_suffix": "x"}              serve a different ETag (the "file changed" case)
  {"redirect": "URL"}               answer GET (not HEAD) with 302 to URL
A fault with "count" applies that many times (then is used up); without it, always.
"""
import email.utils
import hashlib
import html
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = None
FAULTS = None
RANGES = True
RATE = 0
used = {}
used_lock = threading.Lock()


def fault_for(path):
    if not FAULTS or not os.path.exists(FAULTS):
        return {}
    try:
        with open(FAULTS) as f:
            faults = json.load(f)
    except (OSError, ValueError):
        return {}
    fault = faults.get(path, {})
    if "count" in fault:
        with used_lock:
            n = used.get(path, 0)
            if n >= fault["count"]:
                return {}
            used[path] = n + 1
    return fault


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def local_path(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        full = os.path.realpath(os.path.join(ROOT, path.lstrip("/")))
        if full != ROOT and not full.startswith(ROOT + os.sep):
            return None, path
        return full, path

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def send_plain(self, status, text=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if text and self.command != "HEAD":
            self.wfile.write(text)

    def serve(self, head):
        full, path = self.local_path()
        fault = fault_for(path)
        if "delay_ms" in fault:
            time.sleep(fault["delay_ms"] / 1000.0)
        if "status" in fault:
            return self.send_plain(fault["status"], b"injected\n")
        if "redirect" in fault and not head:
            self.send_response(302)
            self.send_header("Location", fault["redirect"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if full is None or not os.path.exists(full):
            return self.send_plain(404, b"not found\n")
        if os.path.isdir(full):
            if not path.endswith("/"):
                self.send_response(301)
                self.send_header("Location", path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.listing(full, path, head)
        st = os.stat(full)
        etag = '"%s%s"' % (hashlib.sha1(("%d-%d" % (st.st_mtime_ns, st.st_size)).encode()).hexdigest()[:16],
                           fault.get("etag_suffix", ""))
        lastmod = email.utils.formatdate(st.st_mtime, usegmt=True)
        size = st.st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if RANGES and rng and rng.startswith("bytes=") and (if_range is None or if_range in (etag, lastmod)):
            a, _, b = rng[6:].partition("-")
            try:
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
            except ValueError:
                return self.send_plain(400)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", lastmod)
        self.send_header("Content-Type", "application/octet-stream")
        if RANGES:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            off = 4096 if fault.get("wrong_range") else 0
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start + off, end + off, size))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head or length == 0:
            return
        limit = length
        if "reset_after" in fault:
            limit = min(limit, fault["reset_after"])
        if "truncate_after" in fault:
            limit = min(limit, fault["truncate_after"])
        sent = 0
        with open(full, "rb") as f:
            f.seek(start)
            while sent < limit:
                chunk = f.read(min(65536, limit - sent))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                if RATE:
                    time.sleep(len(chunk) / RATE)
        if sent < length:
            self.close_connection = True
            if "reset_after" in fault:
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            self.wfile.flush()

    def listing(self, full, path, head):
        rows = []
        for name in sorted(os.listdir(full)):
            p = os.path.join(full, name)
            if os.path.islink(p):
                continue
            slash = "/" if os.path.isdir(p) else ""
            rows.append('<a href="%s%s">%s%s</a>' % (urllib.parse.quote(name), slash, html.escape(name), slash))
        body = ("<html><head><title>Index of %s</title></head><body><h1>Index of %s</h1><pre>"
                '<a href="../">../</a>\n%s</pre></body></html>\n' % (
                    html.escape(path), html.escape(path), "\n".join(rows))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def main():
    global ROOT, FAULTS, RANGES, RATE
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    ROOT = os.path.realpath(args[0])
    i = 1
    while i < len(args):
        if args[i] == "--faults":
            FAULTS = args[i + 1]; i += 2
        elif args[i] == "--no-ranges":
            RANGES = False; i += 1
        elif args[i] == "--rate":
            RATE = int(args[i + 1]); i += 2
        else:
            print("unknown argument " + args[i], file=sys.stderr)
            return 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
