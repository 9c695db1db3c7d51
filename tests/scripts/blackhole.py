#!/usr/bin/env python3
"""An origin that accepts connections and never answers: reads and discards what it is sent,
holds every connection open, and exits by itself after SECONDS.
Usage: blackhole.py ADDR PORT SECONDS
"""
import selectors
import socket
import sys
import time

ADDR, PORT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
srv = socket.socket(socket.AF_INET6 if ":" in ADDR else socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ADDR, PORT))
srv.listen(4096)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    for key, _ in sel.select(timeout=0.5):
        if key.fileobj is srv:
            try:
                conn, _ = srv.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        else:
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data == b"":
                sel.unregister(key.fileobj)
                key.fileobj.close()
