#!/usr/bin/env python3
"""A strict HTTP/1.1 origin that reads each connection's bytes as a sequence of requests and
records, as JSON lines in LOG, every request it parsed and anything it could not read as one
(a "desync": what request smuggling leaves behind). Its answers are cacheable and name the
request target ("this is /path"), so a response stored under the wrong key shows.

MODE "early": answer as soon as a request's head is in, then read its body (what nginx and
many application servers do for a GET); "after": read the body first, then answer.
A CONNECT is answered 200 and the tunnel echoes what it gets (a forward proxy's shape).

Usage: wire_origin.py PORT MODE LOG
"""
import json
import socket
import sys
import threading

PORT = int(sys.argv[1])
MODE = sys.argv[2]
LOG = sys.argv[3]
LOCK = threading.Lock()


def record(obj):
    with LOCK:
        with open(LOG, "a") as f:
            f.write(json.dumps(obj) + "\n")


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0]:
        raise ValueError("bad request line %r" % lines[0])
    host, cl, chunked = None, None, False
    for line in lines[1:]:
        if line[:1] in (" ", "\t") or ":" not in line:
            raise ValueError("bad field line %r" % line)
        name, value = line.split(":", 1)
        if " " in name:
            raise ValueError("bad field name %r" % name)
        name, value = name.lower(), value.strip()
        if name == "host":
            if host is not None:
                raise ValueError("two Host fields")
            host = value
        elif name == "content-length":
            if cl is not None:
                raise ValueError("two Content-Length fields")
            cl = int(value)
        elif name == "transfer-encoding":
            if value.lower() != "chunked":
                raise ValueError("Transfer-Encoding %r" % value)
            chunked = True
    if chunked and cl is not None:
        raise ValueError("both Content-Length and Transfer-Encoding")
    return parts[0], parts[1], host or "", ("chunked" if chunked else (cl or 0))


def read_body(c, framing):
    if framing != "chunked":
        return c.exact(framing)
    body = b""
    while True:
        size = int(c.until(b"\r\n").strip(), 16)
        if size == 0:
            if c.until(b"\r\n") != b"":
                raise ValueError("trailers")
            return body
        body += c.exact(size)
        if c.until(b"\r\n") != b"":
            raise ValueError("chunk not followed by CRLF")


def answer(method, target):
    if method == "CONNECT":
        return b"HTTP/1.1 200 Connection established\r\n\r\n"
    body = ("this is %s" % target).encode()
    head = (
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Type: text/plain\r\n"
        "Content-Length: %d\r\n\r\n" % len(body)
    ).encode()
    return head if method == "HEAD" else head + body


def serve(sock):
    c = Conn(sock)
    try:
        while True:
            try:
                head = c.until(b"\r\n\r\n")
            except EOFError:
                if c.buf:
                    record({"desync": "EOF inside a head", "bytes": c.buf.decode("latin-1")})
                return
            try:
                method, target, host, framing = parse_head(head)
            except ValueError as e:
                record({"desync": str(e), "bytes": head.decode("latin-1")})
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if MODE == "early":
                sock.sendall(answer(method, target))
            try:
                body = read_body(c, framing)
            except (EOFError, ValueError) as e:
                record({"desync": "body: %s" % (e or "EOF"), "target": target})
                return
            record({"method": method, "target": target, "host": host, "body": len(body)})
            if MODE != "early":
                sock.sendall(answer(method, target))
            if method == "CONNECT":
                if c.buf:
                    sock.sendall(c.buf)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return
                    sock.sendall(data)
    except OSError:
        return
    finally:
        sock.close()


def main():
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", PORT))
    srv.listen(128)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


main()
