#!/usr/bin/env python3
"""TCP listener for the namespace lab: accepts on every given port (IPv4 and IPv6) and closes each connection.

Usage: listen.py [--max-seconds N] PORT...
Prints "listening on PORT,PORT..." on stdout once every port is bound, then one "accepted ..." line per connection.
Exits after --max-seconds (default 600) so a forgotten listener cannot outlive its test for long.
"""
import argparse
import selectors
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()

    selector = selectors.DefaultSelector()
    for port in args.ports:
        # One dual-stack socket per port: IPv4 connections arrive as ::ffff:a.b.c.d.
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(128)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    print("listening on " + ",".join(str(p) for p in args.ports), flush=True)

    deadline = time.monotonic() + args.max_seconds
    while (remaining := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(timeout=min(remaining, 1.0)):
            try:
                conn, peer = key.fileobj.accept()
            except OSError:
                continue
            print(f"accepted {peer[0]} {peer[1]} -> {key.fileobj.getsockname()[1]}", flush=True)
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
