#!/usr/bin/env python3
"""Send malformed DNS queries over UDP to HOST:53 and print, per case, what came back:
"<case> none" (nothing within a second) or "<case> rcode=<n> len=<bytes>".

Usage: raw_dns.py HOST
"""
import socket
import struct
import sys

HOST = sys.argv[1]
QNAME = b"\x02ok\x04test\x03lab\x00"
A_IN = struct.pack("!HH", 1, 1)


def hdr(qid, flags=0x0100, qd=1, an=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)


CASES = [
    ("short", b"\x12\x34\x01\x00\x00"),
    ("empty", b""),
    ("pointer-loop", hdr(1) + b"\xc0\x0c" + A_IN),
    ("pointer-forward", hdr(2) + b"\xc0\x40" + A_IN),
    ("long-name", hdr(3) + b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00" + A_IN),
    ("label-past-end", hdr(4) + b"\x3fabc"),
    ("no-question", hdr(5, qd=0)),
    ("two-questions", hdr(6, qd=2) + QNAME + A_IN + QNAME + A_IN),
    ("a-response", hdr(7, flags=0x8180) + QNAME + A_IN),
    ("trailing-junk", hdr(8) + QNAME + A_IN + bytes(range(256)) * 5),
    ("ok", hdr(9) + QNAME + A_IN),
]

for name, data in CASES:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.sendto(data, (HOST, 53))
    try:
        reply = s.recv(65535)
        rcode = reply[3] & 0x0F if len(reply) >= 4 else -1
        print("%s rcode=%d len=%d" % (name, rcode, len(reply)))
    except socket.timeout:
        print("%s none" % name)
    s.close()
