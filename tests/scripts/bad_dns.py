#!/usr/bin/env python3
"""A scripted DNS upstream that answers badly on purpose, by the query name's first label:

  ok        a correct answer: A 10.9.9.9, TTL 300
  loop      the answer's owner name is a compression pointer to itself
  qloop     the echoed question's name is a pointer loop
  trunc     a correct answer cut in the middle of its record
  short     five bytes
  empty     a zero-length datagram
  big       240 A records (about 4 KB) and no TC bit: larger than any client asked for
  wrongid   the answer carries another message ID (and nothing else comes)
  wrongq    the answer is for another name
  garbage   160 bytes of noise
  tc        UDP: the TC bit and no records; TCP: the correct answer

Over TCP (port 53 too) it answers every query correctly. Every query it read is appended to
LOG as "<transport> <qname>" so a test can tell what reached it.

Usage: bad_dns.py ADDRESS LOG
"""
import socket
import struct
import sys
import threading

ADDR = sys.argv[1]
LOG = sys.argv[2]
LOCK = threading.Lock()


def note(transport, name):
    with LOCK:
        with open(LOG, "a") as f:
            f.write("%s %s\n" % (transport, name))


def question(query):
    """The question section's bytes and the name as text (queries are uncompressed)."""
    i = 12
    labels = []
    while i < len(query) and query[i] != 0:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("latin-1"))
        i += 1 + n
    end = i + 1 + 4
    return query[12:end], ".".join(labels).lower()


def header(qid, flags, qd, an):
    return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)


def a_record(ip, name=b"\xc0\x0c"):
    return name + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(ip)


def good(query, qsec):
    qid = struct.unpack("!H", query[:2])[0]
    return header(qid, 0x8180, 1, 1) + qsec + a_record("10.9.9.9")


def answer(query, transport):
    if len(query) < 12:
        return None
    qsec, name = question(query)
    note(transport, name)
    qid = struct.unpack("!H", query[:2])[0]
    kind = name.split(".")[0]
    if transport == "tcp" or kind == "ok":
        return good(query, qsec)
    if kind == "loop":
        # The record's owner is at offset 12 + len(qsec): point it at itself.
        at = 12 + len(qsec)
        return header(qid, 0x8180, 1, 1) + qsec + a_record("10.9.9.9", struct.pack("!H", 0xC000 | at))
    if kind == "qloop":
        return header(qid, 0x8180, 1, 1) + b"\xc0\x0c" + qsec[-4:] + a_record("10.9.9.9")
    if kind == "trunc":
        full = good(query, qsec)
        return full[:len(full) - 6]
    if kind == "short":
        return query[:5]
    if kind == "empty":
        return b""
    if kind == "big":
        records = b"".join(a_record("10.9.%d.%d" % (i // 250, i % 250)) for i in range(240))
        return header(qid, 0x8180, 1, 240) + qsec + records
    if kind == "wrongid":
        return good(struct.pack("!H", (qid + 1) & 0xFFFF) + query[2:], qsec)
    if kind == "wrongq":
        other = b"\x05other\x04test\x03lab\x00" + qsec[-4:]
        return header(qid, 0x8180, 1, 1) + other + a_record("10.6.6.6")
    if kind == "garbage":
        return bytes((i * 37 + 11) & 0xFF for i in range(160))
    if kind == "tc":
        return header(qid, 0x8380, 1, 0) + qsec
    return header(qid, 0x8183, 1, 0) + qsec


def udp_loop(sock):
    while True:
        query, src = sock.recvfrom(65535)
        out = answer(query, "udp")
        if out is not None:
            sock.sendto(out, src)


def tcp_conn(conn):
    try:
        while True:
            head = conn.recv(2)
            if len(head) < 2:
                return
            n = struct.unpack("!H", head)[0]
            query = b""
            while len(query) < n:
                chunk = conn.recv(n - len(query))
                if not chunk:
                    return
                query += chunk
            out = answer(query, "tcp")
            if out is not None:
                conn.sendall(struct.pack("!H", len(out)) + out)
    finally:
        conn.close()


def main():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ADDR, 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((ADDR, 53))
    tcp.listen(16)
    threading.Thread(target=udp_loop, args=(udp,), daemon=True).start()
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()


main()
