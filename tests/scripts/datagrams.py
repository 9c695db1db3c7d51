#!/usr/bin/env python3
"""UDP datagrams larger than the path MTU, for the fragment lab tests.

  recv ADDR PORT COUNT SECONDS     print `got LEN SHA256 SOURCE-ADDRESS` for each datagram
                                   received, until COUNT arrived or SECONDS passed
  sip SRC DST SIZE [long]          send one SIP INVITE of exactly SIZE bytes (a large SDP body;
                                   `long`: long header values instead, like RFC 4475's longreq)
                                   from SRC to DST:5060; the kernel fragments it, in order;
                                   print `sent LEN SHA256 CALL-ID`
  raw SRC DST SPORT DPORT SIZE ORDER
                                   send one UDP datagram of SIZE random bytes as IP fragments
                                   built here, in ORDER (in-order, last-first, reverse), through
                                   a raw socket; print `sent LEN SHA256 FRAGMENTS`
  dns SERVER NAME PAD              one DNS query for NAME/TXT over UDP, padded (EDNS option 12)
                                   with PAD bytes, EDNS buffer 65000; print the answer's size,
                                   flags and TXT strings: `answer LEN rcode=R tc=T an=N txt=...`
"""
import hashlib
import random
import socket
import struct
import sys
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def digest(data):
    return hashlib.sha256(data).hexdigest()


def recv(addr, port, count, seconds):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    print("ready", flush=True)
    end = time.monotonic() + float(seconds)
    got = 0
    while got < int(count) and time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            data, source = s.recvfrom(70000)
        except socket.timeout:
            break
        got += 1
        print("got", len(data), digest(data), source[0], flush=True)


def sip_invite(src, dst, size, long_headers):
    host = "[%s]" % dst if ":" in dst else dst
    call_id = "frag-%d-%d@client.lab" % (size, random.getrandbits(32))
    headers = [
        "INVITE sip:bob@%s SIP/2.0" % host,
        "Via: SIP/2.0/UDP client.lab;branch=z9hG4bK-%d" % random.getrandbits(32),
        "Max-Forwards: 70",
        "From: <sip:alice@client.lab>;tag=%d" % random.getrandbits(32),
        "To: <sip:bob@%s>" % host,
        "Call-ID: %s" % call_id,
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@client.lab>",
        "Content-Type: application/sdp",
    ]
    sdp = "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n" % (
        src, src)

    def render(extra_header, body):
        head = "\r\n".join(headers + ([extra_header] if extra_header else []))
        return ("%s\r\nContent-Length: %d\r\n\r\n%s" % (head, len(body), body)).encode()

    base = render("", sdp)
    room = size - len(base)
    if room < 0:
        raise SystemExit("size %d too small" % size)
    if long_headers:
        # A header with a long value (as RFC 4475's longreq has), padded to the exact size.
        name = "X-Long-Value: "
        msg = render(name + "v" * max(0, room - len(name) - 2), sdp)
    else:
        # A large SDP body: many attribute lines, the last one padded to the exact size.
        lines = []
        while len(render("", sdp + "".join(lines))) + 60 <= size:
            lines.append("a=x-candidate:%08d %s\r\n" % (len(lines), "c" * 12))
        body = sdp + "".join(lines)
        pad = 0
        # Content-Length may gain a digit as the body grows: settle it.
        for _ in range(5):
            msg = render("", body + "a=x-pad:" + "p" * pad + "\r\n")
            if len(msg) == size:
                break
            pad = max(0, pad + size - len(msg))
    if len(msg) != size:
        raise SystemExit("built %d bytes instead of %d" % (len(msg), size))
    return msg, call_id


def sip(src, dst, size, *mode):
    msg, call_id = sip_invite(src, dst, int(size), "long" in mode)
    s = socket.socket(family(dst), socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.sendto(msg, (dst, 5060))
    print("sent", len(msg), digest(msg), call_id, flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def raw(src, dst, sport, dport, size, order):
    v6 = ":" in dst
    fam = family(dst)
    s_b, d_b = socket.inet_pton(fam, src), socket.inet_pton(fam, dst)
    payload = bytes(random.getrandbits(8) for _ in range(int(size)))
    length = 8 + len(payload)
    if v6:
        pseudo = s_b + d_b + struct.pack("!I3xB", length, 17)
    else:
        pseudo = s_b + d_b + struct.pack("!xBH", 17, length)
    header = struct.pack("!HHHH", int(sport), int(dport), length, 0)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    datagram = struct.pack("!HHHH", int(sport), int(dport), length, csum) + payload
    chunk = 1400 if v6 else 1464  # multiples of 8 that fit a 1500-byte MTU
    ident = random.getrandbits(32 if v6 else 16)
    frames = []
    for off in range(0, len(datagram), chunk):
        data = datagram[off:off + chunk]
        more = off + chunk < len(datagram)
        if v6:
            frag = struct.pack("!BBHI", 17, 0, off | (1 if more else 0), ident)
            ip = struct.pack("!IHBB", 6 << 28, len(frag) + len(data), 44, 64) + s_b + d_b
            frames.append(ip + frag + data)
        else:
            flags = (off >> 3) | (0x2000 if more else 0)
            ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(data), ident, flags, 64, 17, 0)
            ip += s_b + d_b
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            frames.append(ip + data)
    if order == "last-first":
        frames = frames[-1:] + frames[:-1]
    elif order == "reverse":
        frames.reverse()
    elif order != "in-order":
        raise SystemExit("unknown order " + order)
    sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for f in frames:
        sock.sendto(f, (dst, 0))
    print("sent", len(payload), digest(payload), len(frames), flush=True)


def name_end(msg, off):
    """Offset after a (possibly compressed) domain name."""
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += n + 1


def dns(server, name, pad):
    pad = int(pad)
    qid = random.getrandbits(16)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", 16, 1)
    option = struct.pack("!HH", 12, pad) + b"\0" * pad
    q += b"\0" + struct.pack("!HHIH", 41, 65000, 0, len(option)) + option
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (server, 53))
    a, _ = s.recvfrom(70000)
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", a[:12])
    if rid != qid:
        raise SystemExit("answer id %d for query %d" % (rid, qid))
    off = 12
    for _ in range(qd):
        off = name_end(a, off) + 4
    texts = []
    for _ in range(an):
        off = name_end(a, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", a[off:off + 10])
        off += 10
        rdata = a[off:off + rdlen]
        off += rdlen
        i = 0
        while rtype == 16 and i < len(rdata):
            texts.append(rdata[i + 1:i + 1 + rdata[i]].decode())
            i += 1 + rdata[i]
    print("query", len(q), "answer", len(a), "rcode=%d" % (flags & 15), "tc=%d" % ((flags >> 9) & 1),
          "an=%d" % an, "txt=" + ",".join(sorted(texts)), flush=True)


COMMANDS = {"recv": recv, "sip": sip, "raw": raw, "dns": dns}
COMMANDS[sys.argv[1]](*sys.argv[2:])
