#!/usr/bin/env python3
"""A benign client during a flood: one TCP connection per interval, each from the next source address in turn.

Usage: benign_client.py --duration S [--interval S] [--timeout S] HOST PORT SOURCE [SOURCE...]

Each attempt binds to a SOURCE (so the client uses its own lab address, not the generator's), connects to
HOST:PORT within --timeout seconds (the kernel retransmits a lost SYN after 1 s) and closes. Prints one line per
attempt ("ok MS", "failed REASON") and last "attempts=N connected=M worst_ms=X". Exits 1 unless all connected.
"""
import argparse
import socket
import sys
import time


def attempt(host: str, port: int, source: str, timeout: float) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        start = time.monotonic()
        sock.connect((host, port))
        return f"ok {(time.monotonic() - start) * 1000:.1f}"
    except OSError as error:
        return f"failed {error}"
    finally:
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()

    # One host per family: a SOURCE of the other family than HOST is paired with HOST's counterpart, so the
    # caller may pass "203.0.113.5/2001:db8:1::5" as HOST to alternate families.
    hosts = args.host.split("/")
    attempts = connected = 0
    worst = 0.0
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        source = args.sources[attempts % len(args.sources)]
        host = next((h for h in hosts if (":" in h) == (":" in source)), hosts[0])
        began = time.monotonic()
        outcome = attempt(host, args.port, source, args.timeout)
        attempts += 1
        print(f"{time.strftime('%H:%M:%S')} {source} -> {host}: {outcome}", flush=True)
        if outcome.startswith("ok"):
            connected += 1
            worst = max(worst, float(outcome.split()[1]))
        time.sleep(max(0.0, args.interval - (time.monotonic() - began)))
    print(f"attempts={attempts} connected={connected} worst_ms={worst:.1f}", flush=True)
    return 0 if attempts > 0 and connected == attempts else 1


if __name__ == "__main__":
    sys.exit(main())
