#!/usr/bin/env python3
"""Smart HTTP git server (git's own `git http-backend`, run as CGI) with a Git LFS batch
API, on loopback, for the tests and benchmarks.

Usage: git_http_server.py ROOT PORTFILE [--lfs DIR] [--auth USER:PASSWORD] [--port N]

- Every repository under ROOT is served at http://127.0.0.1:PORT/<path> (fetch and push).
- With --lfs, `POST <repo>.git/info/lfs/objects/batch` answers downloads from DIR/<oid>
  (git-lfs docs/api/batch.md, basic transfer) with hrefs to /lfs/<oid>; a missing object
  gets the per-object 404 error. The files are served as they are: a test tampers with an
  object by writing other bytes into DIR/<oid>.
- With --auth, every request needs that HTTP basic credential (401 otherwise).
The chosen port is written to PORTFILE once the server listens.
"""
import base64
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
ROOT, PORTFILE = os.path.abspath(args[0]), args[1]
LFS = args[args.index("--lfs") + 1] if "--lfs" in args else None
AUTH = args[args.index("--auth") + 1] if "--auth" in args else None
PORT = int(args[args.index("--port") + 1]) if "--port" in args else 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *a):
        sys.stderr.write("%s\n" % (fmt % a))

    def authorized(self):
        if AUTH is None:
            return True
        want = "Basic " + base64.b64encode(AUTH.encode()).decode()
        if self.headers.get("Authorization") == want:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # git sends large pushes chunked (over http.postBuffer).
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if not self.authorized():
            return
        if LFS and self.path.startswith("/lfs/"):
            return self.lfs_object(self.path[len("/lfs/"):])
        self.cgi(b"")

    def do_POST(self):
        if not self.authorized():
            return
        data = self.body()
        if LFS and self.path.endswith("/info/lfs/objects/batch"):
            return self.batch(data)
        self.cgi(data)

    def batch(self, data):
        request = json.loads(data)
        host = "http://127.0.0.1:%d" % self.server.server_address[1]
        objects = []
        for o in request.get("objects", []):
            oid = o["oid"]
            if os.path.isfile(os.path.join(LFS, oid)):
                objects.append({"oid": oid, "size": o["size"],
                                "actions": {"download": {"href": "%s/lfs/%s" % (host, oid),
                                                         "header": {"X-Test": "1"}}}})
            else:
                objects.append({"oid": oid, "size": o["size"],
                                "error": {"code": 404, "message": "Object does not exist"}})
        out = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def lfs_object(self, oid):
        path = os.path.join(LFS, os.path.basename(oid))
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def cgi(self, data):
        path, _, query = self.path.partition("?")
        env = dict(os.environ)
        env.update({
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(data)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "1000M",
        })
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        # One line per git request body, for benchmarks that count bytes pushed.
        sys.stderr.write("BODY %s %s %d\n" % (self.command, path, len(data)))
        done = subprocess.run(["git", "-c", "safe.directory=*", "-c", "http.receivepack=true",
                               "http-backend"], input=data, env=env, capture_output=True)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, body = done.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # One line per answer, for benchmarks that count bytes served.
        sys.stderr.write("SENT %s %s %d\n" % (self.command, path, len(body)))


ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
