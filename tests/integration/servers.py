"""Real web servers for tests, each with its own configuration in a temp dir, on
127.0.0.1, stopped by pid (never by name) when the context ends.

    with web_server("nginx", root, workdir, variant="json") as url: ...
Kinds: nginx (variants html, html-approx, json; suffixes -rate-R, -auth, -tls, -slow),
apache (fancy, plain, table), lighttpd,
python, fault (tests/support/fault_http_server.py; variant "no-ranges" or a faults file).
"""
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FAULT_SERVER = os.path.join(HERE, "..", "support", "fault_http_server.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available(kind):
    exe = {"nginx": "nginx", "apache": "apache2", "lighttpd": "lighttpd"}.get(kind)
    return exe is None or shutil.which(exe) is not None or os.path.exists("/usr/sbin/" + exe)


def _wait_ready(url, proc, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited (%s): %s" % (proc.returncode, open(log).read()[-2000:]))
        try:
            ctx = ssl._create_unverified_context() if url.startswith("https:") else None
            urllib.request.urlopen(url, timeout=2, context=ctx).read(1)
            return
        except urllib.error.HTTPError:
            return  # it answers: ready (the test decides what the answer should be)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server at %s not ready after %ss" % (url, timeout))


AUTH_USER, AUTH_PASSWORD = "alice", "s3cr3t-pw"  # the "-auth" variants' only account
SLOW_RATE = "1k"  # nginx "-slow" variants: bytes per second of each file below /slow/


def _htpasswd(path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    with open(path, "w") as f:
        f.write("%s:%s\n" % (AUTH_USER, crypt.crypt(AUTH_PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))))


def _nginx(root, d, port, variant):
    """Variants: html, html-approx, json; a "-rate-<R>" suffix adds limit_rate R; an "-auth"
    suffix requires basic auth as AUTH_USER:AUTH_PASSWORD; a "-slow" suffix (the last one)
    makes the files below /slow/ drip at SLOW_RATE while listings and everything else stay
    fast."""
    rate = ""
    slow = ""
    if variant and variant.endswith("-slow"):
        variant = variant[:-len("-slow")]
        # Files only (a URI not ending in "/"): directory listings stay with "location /".
        slow = "location ~ ^/slow/.*[^/]$ {{ limit_rate {}; }}".format(SLOW_RATE)
    auth = ""
    if variant and variant.endswith("-auth"):
        variant = variant[:-len("-auth")]
        _htpasswd(os.path.join(d, "htpasswd"))
        auth = 'auth_basic "fanhsm"; auth_basic_user_file %s/htpasswd;' % d
    tls = ""
    if variant and variant.endswith("-tls"):  # a self-signed certificate (use --insecure)
        variant = variant[:-len("-tls")]
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", os.path.join(d, "key.pem"),
                        "-out", os.path.join(d, "cert.pem")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        tls = " ssl; ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem" % (d, d)
    if variant and "-rate-" in variant:
        variant, r = variant.split("-rate-")
        rate = "limit_rate %s;" % r
    fmt = "json" if variant == "json" else "html"
    exact = "off" if variant == "html-approx" else "on"
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port}{tls};
    include {d}/extra*.conf;
    root {root};
    location / {{ autoindex on; autoindex_exact_size {exact}; autoindex_format {fmt}; {rate} {auth} }}
    {slow}
  }}
}}
""".format(d=d, port=port, root=root, exact=exact, fmt=fmt, rate=rate, auth=auth, tls=tls,
           slow=slow))
    return ["/usr/sbin/nginx", "-c", conf, "-p", d]


def _apache(root, d, port, variant):
    mods = "/usr/lib/apache2/modules"
    opts = {"fancy": "FancyIndexing", "plain": "-FancyIndexing", "table": "FancyIndexing HTMLTable"}[variant or "fancy"]
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write("""
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
DocumentRoot {root}
<Directory {root}>
  Options +Indexes
  Require all granted
  IndexOptions {opts} NameWidth=* Charset=UTF-8
</Directory>
""".format(d=d, m=mods, port=port, root=root, opts=opts))
    return ["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"]


def _lighttpd(root, d, port, variant):
    conf = os.path.join(d, "lighttpd.conf")
    with open(conf, "w") as f:
        f.write("""
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.modules += ( "mod_dirlisting" )
dir-listing.activate = "enable"
dir-listing.encoding = "utf-8"
mimetype.assign = ( "" => "application/octet-stream" )
""".format(root=root, port=port, d=d))
    return ["/usr/sbin/lighttpd", "-D", "-f", conf]


@contextlib.contextmanager
def web_server(kind, root, workdir, variant=None):
    """Yields the base URL (ending in '/') of `root` served by `kind`."""
    d = os.path.join(workdir, "%s-%s" % (kind, variant or "default"))
    os.makedirs(d, exist_ok=True)
    log = os.path.join(d, "stdout.log")
    port = None
    if kind == "python":
        port = free_port()
        cmd = [sys.executable if sys.executable else "python3", "-m", "http.server", "--bind",
               "127.0.0.1", "--directory", root, str(port)]
    elif kind == "fault":
        cmd = ["/usr/bin/python3", FAULT_SERVER, root]
        if variant == "no-ranges":
            cmd.append("--no-ranges")
        elif variant:
            cmd += ["--faults", variant]
    else:
        port = free_port()
        cmd = {"nginx": _nginx, "apache": _apache, "lighttpd": _lighttpd}[kind](root, d, port, variant)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if kind == "fault" else out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if kind == "fault":
            line = proc.stdout.readline().decode()
            assert line.startswith("PORT "), "fault server said %r" % line
            port = int(line.split()[1])
        url = "%s://127.0.0.1:%d/" % ("https" if variant and variant.endswith("-tls") else "http", port)
        _wait_ready(url, proc, log)
        yield url
    finally:
        # The server and any workers it forked are in its own session: stop that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
