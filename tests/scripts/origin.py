#!/usr/bin/env python3
"""A test origin whose answers the tests control, and which counts what it is asked.

Serves files from DIR (GET and HEAD, HTTP/1.1 keep-alive) with:
  - per-path extra headers, status, a throttle, a delay before the response head (seconds) and
    a 103 Early Hints head sent first, from DIR/.routes.json, re-read on every request so a test
    can change them between requests:
      {"/a.bin": {"headers": {"Cache-Control": "max-age=60"}, "rate": 1048576, "delay": 2,
                  "status": 503, "hints": {"Link": "</s.css>; rel=preload"}}}
    A key ending in "*" is a prefix route: it applies to every path that starts with the rest
    and has no route of its own (the longest such prefix wins);
  - ETag (from size and mtime, unless the route sets one) and If-None-Match -> 304,
    Last-Modified and If-Modified-Since -> 304;
  - single byte ranges -> 206 / 416 (unless the route says "ranges": false);
  - a count of requests per path, read with GET /__counts (JSON), reset with GET /__reset;
  - a slow origin: a route's "delay" (seconds) waits before the response head.
Usage: origin.py DIR PORT
"""
import email.utils
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = sys.argv[1]
PORT = int(sys.argv[2])
COUNTS = {}
LAST = {}
LOCK = threading.Lock()


def routes():
    try:
        with open(os.path.join(ROOT, ".routes.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def route_for(path):
    """The route for `path`: its own entry, else the longest "PREFIX*" entry it starts with
    (so a bench can give thousands of distinct objects one route)."""
    all_routes = routes()
    if path in all_routes:
        return all_routes[path]
    best = None
    for key in all_routes:
        if key.endswith("*") and path.startswith(key[:-1]):
            if best is None or len(key) > len(best):
                best = key
    return all_routes[best] if best is not None else {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))

    def send_json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def do_POST(self):
        self.count()
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        body = b"posted %d bytes\n" % len(data)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def count(self):
        path = self.path.split("?")[0]
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
            LAST[path] = {k.lower(): v for k, v in self.headers.items()}
            # The address the request arrived at (tests check where the gateway sent it).
            LAST[path]["__local"] = self.connection.getsockname()[0]

    def serve(self, head):
        path = self.path.split("?")[0]
        if path == "/__counts":
            with LOCK:
                return self.send_json({"counts": COUNTS, "last": LAST})
        if path == "/__reset":
            with LOCK:
                COUNTS.clear()
                LAST.clear()
            return self.send_json({})
        self.count()
        route = route_for(path)
        if route.get("delay"):
            time.sleep(float(route["delay"]))
        file = os.path.join(ROOT, path.lstrip("/"))
        if not os.path.isfile(file):
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        st = os.stat(file)
        size = st.st_size
        extra = route.get("headers", {})
        etag = extra.get("ETag", '"%x-%x"' % (size, int(st.st_mtime)))
        lm = email.utils.formatdate(st.st_mtime, usegmt=True)
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        status = route.get("status", 200)
        if (inm is not None and inm == etag) or (inm is None and ims == lm):
            self.send_response(304)
            self.send_header("ETag", etag)
            for k, v in extra.items():
                if k != "ETag":
                    self.send_header(k, v)
            self.end_headers()
            return
        start, end = 0, size
        rng = self.headers.get("Range")
        if rng and route.get("ranges", True) and rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].partition("-")
            try:
                if a == "":
                    start, end = max(0, size - int(b)), size
                else:
                    start = int(a)
                    end = min(size, int(b) + 1) if b else size
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            except ValueError:
                start, end = 0, size
        hints = route.get("hints")
        if hints:
            # 103 Early Hints ahead of the final response (RFC 8297).
            self.send_response_only(103)
            for k, v in hints.items():
                self.send_header(k, v)
            self.end_headers()
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", lm)
        self.send_header("Accept-Ranges", "bytes")
        for k, v in extra.items():
            if k != "ETag":
                self.send_header(k, v)
        self.end_headers()
        if head:
            return
        rate = route.get("rate")
        with open(file, "rb") as f:
            f.seek(start)
            left = end - start
            chunk = 256 * 1024
            if rate:
                chunk = max(1024, min(chunk, rate // 20))
            t0 = time.monotonic()
            sent = 0
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    break
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(data)
                sent += len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = __import__("socket").AF_INET6

    def server_bind(self):
        import socket
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


Server(("::", PORT), Handler).serve_forever()
