#!/usr/bin/env python3
"""Opens one TCP connection to HOST:PORT for each PORT, one after the other, and closes it.

Usage: connect.py [--timeout S] [--count N] [--expect-timeout] [--accept-refused] HOST PORT...
Prints one line per attempt ("PORT connected from SRCPORT", "PORT refused", "PORT timed out") and exits 1 if any
attempt had another outcome than the expected one: connected by default; connected or refused with
--accept-refused; timed out with --expect-timeout (used to make the kernel retransmit a SYN that is dropped).
"""
import argparse
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=1, help="connections per port")
    parser.add_argument("--expect-timeout", action="store_true")
    parser.add_argument("--accept-refused", action="store_true")
    parser.add_argument("host")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    ok = True
    for port in args.ports:
        for _ in range(args.count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(args.timeout)
            try:
                sock.connect((args.host, port))
                outcome = "connected"
                print(f"{port} connected from {sock.getsockname()[1]}", flush=True)
            except ConnectionRefusedError:
                outcome = "refused"
                print(f"{port} refused", flush=True)
            except (socket.timeout, TimeoutError):
                outcome = "timeout"
                print(f"{port} timed out", flush=True)
            except OSError as error:
                outcome = "error"
                print(f"{port} error: {error}", flush=True)
            finally:
                sock.close()
            if args.expect_timeout:
                ok &= outcome == "timeout"
            elif args.accept_refused:
                ok &= outcome in ("connected", "refused")
            else:
                ok &= outcome == "connected"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
