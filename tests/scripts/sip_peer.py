#!/usr/bin/env python3
"""A SIP peer that records exactly what arrives, and the client side that sends torture inputs.

  sip_peer.py record HOST PORT LOG
      Listen on HOST:PORT over UDP and TCP. Every UDP datagram and every TCP connection's
      whole byte stream (written when the connection closes) becomes one JSON line in LOG:
      {"transport": "udp"|"tcp", "src": "ip:port", "hex": "<bytes>"}. Answers nothing.

  sip_peer.py send-udp HOST PORT DIR
      Send every file of DIR (sorted by name) as one datagram from one socket, in order.

  sip_peer.py send-tcp HOST PORT DIR SENTINEL
      For every file of DIR (sorted): connect, send the file, then the SENTINEL file's bytes
      with the file's name in place of "@@", close. One connection per file.
"""
import json
import os
import socket
import sys
import threading
import time

LOCK = threading.Lock()


def record_line(log, transport, src, data):
    with LOCK:
        with open(log, "a") as f:
            f.write(json.dumps({"transport": transport, "src": "%s:%d" % src[:2],
                                "hex": data.hex()}) + "\n")


def record(host, port, log):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((host, port))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(64)

    def udp_loop():
        while True:
            data, src = udp.recvfrom(70000)
            record_line(log, "udp", src, data)

    def conn_loop(conn, src):
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        conn.close()
        record_line(log, "tcp", src, b"".join(chunks))

    threading.Thread(target=udp_loop, daemon=True).start()
    while True:
        conn, src = tcp.accept()
        threading.Thread(target=conn_loop, args=(conn, src), daemon=True).start()


def files(directory):
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory))]


def send_udp(host, port, directory):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for path in files(directory):
        with open(path, "rb") as f:
            s.sendto(f.read(), (host, port))
        # Paced, so no socket buffer along the way overflows.
        time.sleep(0.003)


def send_tcp(host, port, directory, sentinel):
    with open(sentinel, "rb") as f:
        tail = f.read()
    for path in files(directory):
        with open(path, "rb") as f:
            data = f.read()
        name = os.path.basename(path).encode()
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(data)
        s.sendall(tail.replace(b"@@", name))
        s.shutdown(socket.SHUT_WR)
        # Drain until the gateway closes its side: the far end never answers.
        while s.recv(65536):
            pass
        s.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "record":
        record(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif mode == "send-udp":
        send_udp(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif mode == "send-tcp":
        send_tcp(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.exit("unknown mode " + mode)
