#!/usr/bin/env python3
"""A SIP-over-TCP peer that answers every request with 200 OK.

Keeps each connection open for further requests until the client closes it, except after a
request carrying `X-Close: server`, which it answers and then closes itself (so the tests can
choose who closes first). Listens on ADDR:PORT.

usage: sip_tcp_origin.py ADDR PORT
"""
import socket
import sys
import threading

ADDR, PORT = sys.argv[1], int(sys.argv[2])


def message(conn, buf):
    """One SIP message (head + Content-Length body) from `buf` and the socket; None at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head, rest[length:]


def serve(conn):
    buf = b""
    with conn:
        while True:
            head, buf = message(conn, buf)
            if head is None:
                return
            lines = head.split(b"\r\n")
            keep = [
                l for l in lines[1:]
                if l.split(b":")[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
            ]
            answer = b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
            conn.sendall(answer)
            if any(l.lower().startswith(b"x-close: server") for l in lines):
                return


family = socket.AF_INET6 if ":" in ADDR else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((ADDR, PORT))
listener.listen(64)
while True:
    c, _ = listener.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
