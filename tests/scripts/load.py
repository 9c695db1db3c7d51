#!/usr/bin/env python3
"""Misbehaving and massive peers for the exhaustion tests (plain sockets, no dependencies).

  load.py hold HOST PORT N PATH SECONDS
      open N TCP connections, send one keep-alive GET PATH on each, read each response's
      headers and body (Content-Length), keep them all open for SECONDS; prints JSON
      {"connected": c, "answered": a, "statuses": {...}, "errors": {...}}
  load.py slowloris HOST PORT N SECONDS
      open N connections that send a request head one byte every second and never finish it;
      prints JSON {"connected": c, "closed_by_peer": k} after SECONDS
  load.py silent PORT
      an origin that accepts connections and never answers (until killed)
  load.py slowdns ADDR DELAY
      a DNS server on ADDR:53/udp answering every A query with 10.9.9.9 after DELAY seconds
"""
import json
import selectors
import socket
import struct
import sys
import threading
import time


def hold(host, port, n, path, seconds):
    sel = selectors.DefaultSelector()
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode()
    conns = {}
    errors = {}
    connected = 0
    # Connect in batches so the listener's backlog is never the limit being measured.
    pending = list(range(n))
    while pending or any(c["state"] == "connecting" for c in conns.values()):
        while pending and sum(1 for c in conns.values() if c["state"] == "connecting") < 256:
            pending.pop()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect_ex((host, port))
            except OSError as e:
                errors[e.strerror] = errors.get(e.strerror, 0) + 1
                s.close()
                continue
            conns[s.fileno()] = {"sock": s, "state": "connecting", "buf": b"", "t": time.monotonic()}
            sel.register(s, selectors.EVENT_WRITE)
        for key, _ in sel.select(timeout=1):
            c = conns[key.fd]
            s = c["sock"]
            if c["state"] == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sel.unregister(s)
                if err:
                    errors[str(err)] = errors.get(str(err), 0) + 1
                    c["state"] = "failed"
                    s.close()
                    continue
                connected += 1
                c["state"] = "sent"
                s.sendall(req)
        now = time.monotonic()
        for c in conns.values():
            if c["state"] == "connecting" and now - c["t"] > 30:
                sel.unregister(c["sock"])
                c["state"] = "failed"
                errors["connect timeout"] = errors.get("connect timeout", 0) + 1
                c["sock"].close()
    # Read every answer.
    statuses = {}
    answered = 0
    live = [c for c in conns.values() if c["state"] == "sent"]
    for c in live:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    deadline = time.monotonic() + 120
    left = len(live)
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except OSError as e:
                data = b""
                errors[e.strerror] = errors.get(e.strerror, 0) + 1
            if not data:
                sel.unregister(c["sock"])
                c["state"] = "closed"
                left -= 1
                continue
            c["buf"] += data
            head, sep, body = c["buf"].partition(b"\r\n\r\n")
            if not sep:
                continue
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if len(body) >= length:
                status = lines[0].split(b" ")[1].decode()
                statuses[status] = statuses.get(status, 0) + 1
                answered += 1
                sel.unregister(c["sock"])
                c["state"] = "answered"
                left -= 1
    print(json.dumps({"connected": connected, "answered": answered, "statuses": statuses,
                      "errors": errors}), flush=True)
    time.sleep(seconds)
    for c in conns.values():
        c["sock"].close()


def slowloris(host, port, n, seconds):
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            pass
    head = b"GET / HTTP/1.1\r\nHost: %s\r\nX-Slow: " % host.encode() + b"a" * 10000
    end = time.monotonic() + seconds
    i = 0
    closed = set()
    while time.monotonic() < end:
        for s in socks:
            if s.fileno() in closed:
                continue
            try:
                s.send(head[i:i + 1])
                if s.recv(4096) == b"":
                    closed.add(s.fileno())
            except BlockingIOError:
                pass
            except OSError:
                closed.add(s.fileno())
        i += 1
        time.sleep(1)
    print(json.dumps({"connected": len(socks), "closed_by_peer": len(closed)}), flush=True)


def silent(port):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(1024)
    held = []
    while True:
        c, _ = srv.accept()
        held.append(c)


def slowdns(addr, delay):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))

    def answer(q, peer):
        time.sleep(delay)
        # Header: same id, QR+RD+RA, one question, one answer.
        qid = q[:2]
        flags = struct.pack("!H", 0x8180)
        i = 12
        while q[i] != 0:
            i += q[i] + 1
        question = q[12:i + 5]
        ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("10.9.9.9")
        s.sendto(qid + flags + struct.pack("!HHHH", 1, 1, 0, 0) + question + ans, peer)

    while True:
        q, peer = s.recvfrom(4096)
        if len(q) > 12:
            threading.Thread(target=answer, args=(q, peer), daemon=True).start()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]))
    elif cmd == "slowloris":
        slowloris(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "silent":
        silent(int(sys.argv[2]))
    elif cmd == "slowdns":
        slowdns(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit("unknown command " + cmd)
