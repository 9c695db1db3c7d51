#!/usr/bin/env python3
"""Send the bytes given (Python escapes such as \\r\\n are understood) to HOST:PORT on a new TCP
connection, then print everything received until the peer closes or stays quiet for QUIET
seconds (default 2). For sending requests no well-behaved client would send.

Usage: raw_http.py HOST PORT BYTES [QUIET]
"""
import codecs
import socket
import sys

host, port, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
quiet = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
data = codecs.decode(text, "unicode_escape").encode("latin-1")
s = socket.create_connection((host, port), timeout=10)
s.sendall(data)
s.settimeout(quiet)
out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except (socket.timeout, ConnectionResetError):
    pass
sys.stdout.write(out.decode("latin-1"))
