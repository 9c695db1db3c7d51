#!/usr/bin/env python3
"""A client that reuses one source port toward one destination after each kind of close.

For each KIND, in order: connect from CLIENT_IP:CLIENT_PORT (SO_REUSEADDR) to DST:DST_PORT
within a 2 s bound, exchange one request and answer, and end the connection that way:
  gateway-first  the request asks the far side to close (HTTP `Connection: close`, SIP
                 `X-Close: server`); read until it does, then close;
  client-first   read one answer (by Content-Length) and close while the far side keeps the
                 connection open;
  reset          read one answer, then close with SO_LINGER 0 (an RST);
  half-close     send the request, shutdown(SHUT_WR), read until the far side closes.
A last connect after the last close checks that one too. "Right away" is as soon as the
client's own kernel lets the port go: after a close the client waits until its old socket has
finished closing (TIME_WAIT, which a bound connect may reuse, or gone) — the same wait any client
has, proxy or not. Prints `ok KIND` per connection and exits non-zero (with the reason) at the
first connection that fails.

usage: reuse_client.py PROTO CLIENT_IP CLIENT_PORT DST DST_PORT KIND[,KIND...] [SNI CAFILE]
PROTO: http (plain HTTP), https (HTTP over TLS, verified against CAFILE with SNI), sip (SIP over
TCP, OPTIONS).
"""
import socket
import ssl
import sys
import time

PROTO, CLIENT, CPORT, DST, DPORT, KINDS = sys.argv[1:7]
CPORT, DPORT = int(CPORT), int(DPORT)
SNI = sys.argv[7] if len(sys.argv) > 7 else None
CAFILE = sys.argv[8] if len(sys.argv) > 8 else None
FAMILY = socket.AF_INET6 if ":" in DST else socket.AF_INET
CONNECT_BOUND = 2.0


def request(n, close):
    if PROTO == "sip":
        host = "[%s]" % DST if ":" in DST else DST
        extra = "X-Close: server\r\n" if close else ""
        return (
            "OPTIONS sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/TCP client.lab;branch=z9hG4bK-reuse-%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@client.lab>;tag=a%d\r\nTo: <sip:bob@%s>\r\n"
            "Call-ID: reuse-%d-%d@client.lab\r\nCSeq: 1 OPTIONS\r\n%sContent-Length: 0\r\n\r\n"
            % (host, n, n, host, CPORT, n, extra)
        ).encode()
    host = SNI or DST
    extra = "Connection: close\r\n" if close else ""
    return ("GET /hello.txt HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (host, extra)).encode()


def read_answer(s):
    """One answer framed by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before an answer: %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed inside an answer")
        body += chunk
    status = head.split(b"\r\n")[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError("answer %r" % status)
    return body


def read_to_end(s):
    """Read until the far side closes. Over TLS the close_notify alert comes before the FIN:
    wait for the FIN too (reading the socket itself, sending nothing: bytes sent to a socket the
    far side has closed would be answered with a reset), so the far side has closed first."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    if isinstance(s, ssl.SSLSocket):
        while socket.socket.recv(s, 65536):
            pass
    return data


def own_sockets_closing():
    """States of this client's sockets on CPORT that still block reusing it (not TIME_WAIT)."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                state = fields[3]
                # 06 TIME_WAIT: reusable by a bound connect; 0A LISTEN: not ours.
                if local_port == CPORT and state not in ("06", "0A"):
                    states.append(state)
    return states


def wait_released():
    deadline = time.monotonic() + CONNECT_BOUND
    while own_sockets_closing():
        if time.monotonic() > deadline:
            print("the client's own socket on port %d did not finish closing: %s"
                  % (CPORT, own_sockets_closing()), flush=True)
            sys.exit(1)
        time.sleep(0.001)


def connect():
    """The connected socket (TLS-wrapped for https)."""
    raw = socket.socket(FAMILY, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    raw.bind((CLIENT, CPORT))
    raw.settimeout(CONNECT_BOUND)
    raw.connect((DST, DPORT))
    raw.settimeout(10)
    if PROTO == "https":
        ctx = ssl.create_default_context(cafile=CAFILE)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx.wrap_socket(raw, server_hostname=SNI)
    return raw


def one(n, kind):
    try:
        s = connect()
    except OSError as e:
        print("connect %d (%s) from port %d failed: %s" % (n, kind, CPORT, e), flush=True)
        sys.exit(1)
    if kind == "gateway-first":
        s.sendall(request(n, True))
        data = read_to_end(s)
        if b" 200 " not in data.split(b"\r\n")[0] + b" ":
            raise RuntimeError("answer %r" % data[:80])
        s.close()
    elif kind == "client-first":
        s.sendall(request(n, False))
        read_answer(s)
        s.close()
    elif kind == "reset":
        s.sendall(request(n, False))
        read_answer(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    elif kind == "half-close":
        s.sendall(request(n, True))
        # The socket's own shutdown: SSLSocket.shutdown would also drop the TLS session.
        socket.socket.shutdown(s, socket.SHUT_WR)
        data = read_to_end(s)
        if b" 200 " not in data.split(b"\r\n")[0] + b" ":
            raise RuntimeError("answer %r" % data[:80])
        s.close()
    elif kind == "last":
        s.sendall(request(n, True))
        read_to_end(s)
        s.close()
    else:
        raise SystemExit("unknown kind " + kind)
    print("ok", kind, flush=True)
    wait_released()


kinds = KINDS.split(",") + ["last"]
for n, kind in enumerate(kinds):
    one(n, kind)
