#!/usr/bin/env python3
"""Sends a scripted sequence of TCP SYNs with forged sources, IPv4 or IPv6, so two runs see the same traffic.

Usage: syn_script.py SCRIPT

Each line of SCRIPT is one of (blank lines and # comments ignored):
  syn SOURCE DESTINATION SOURCE-PORT DESTINATION-PORT [chain=N]
                                       one SYN (a retransmission is the same line again); IPv6 with chain=N: behind
                                       N destination-options headers of 8 bytes (N at most 150, within an MTU)
  wait MILLISECONDS                    a pause
Raw sockets (root). Bounded: at most 10,000 lines and 30 s of pauses in all; a bad line stops it before anything
is sent, naming the line.
"""
import ipaddress
import random
import socket
import struct
import sys
import time

MAX_LINES = 10_000
MAX_WAIT_MS = 30_000


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_syn(pseudo: bytes, sport: int, dport: int, sequence: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, sequence, 0, 5 << 4, 0x02, 64240, 0, 0)
    return tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]


def packet(source, destination, sport: int, dport: int, sequence: int, chain: int = 0) -> bytes:
    src, dst = source.packed, destination.packed
    if source.version == 4:
        tcp = tcp_syn(src + dst + struct.pack("!BBH", 0, 6, 20), sport, dport, sequence)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, random.getrandbits(16), 0, 64, 6, 0, src, dst)
        return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + tcp
    tcp = tcp_syn(src + dst + struct.pack("!I3xB", 20, 6), sport, dport, sequence)
    # Destination options, each 8 bytes: its next header, length 0 (8 bytes), and a 4-byte PadN option.
    options = b"".join(struct.pack("!BB", 60 if index < chain - 1 else 6, 0) + bytes([1, 4, 0, 0, 0, 0])
                       for index in range(chain))
    first = 60 if chain else 6
    return struct.pack("!IHBB16s16s", 6 << 28, len(options) + 20, first, 64, src, dst) + options + tcp


def parse(path):
    steps, waited = [], 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if number > MAX_LINES:
                raise SystemExit(f"{path}: more than {MAX_LINES} lines")
            try:
                if words[0] == "wait" and len(words) == 2:
                    milliseconds = int(words[1])
                    waited += milliseconds
                    if not 0 <= milliseconds or waited > MAX_WAIT_MS:
                        raise ValueError(f"pauses must be positive and at most {MAX_WAIT_MS} ms in all")
                    steps.append(("wait", milliseconds))
                elif words[0] == "syn" and len(words) in (5, 6):
                    source, destination = ipaddress.ip_address(words[1]), ipaddress.ip_address(words[2])
                    sport, dport = int(words[3]), int(words[4])
                    if source.version != destination.version or not (0 < sport < 65536 and 0 < dport < 65536):
                        raise ValueError("mixed families or a port outside 1-65535")
                    chain = 0
                    if len(words) == 6:
                        if not words[5].startswith("chain=") or source.version != 6:
                            raise ValueError("the sixth word can only be chain=N, for IPv6")
                        chain = int(words[5][len("chain="):])
                        if not 0 <= chain <= 150:
                            raise ValueError("chain=N takes 0 to 150 headers")
                    steps.append(("syn", source, destination, sport, dport, chain))
                else:
                    raise ValueError("expected `syn SRC DST SPORT DPORT` or `wait MS`")
            except ValueError as error:
                raise SystemExit(f"{path}:{number}: {error}")
    return steps


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    steps = parse(sys.argv[1])
    sockets = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
               6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}  # both include the IP header
    sequences, sent = {}, 0
    for step in steps:
        if step[0] == "wait":
            time.sleep(step[1] / 1000)
            continue
        _, source, destination, sport, dport, chain = step
        # A retransmission repeats its connection's sequence number, as a real stack's would.
        sequence = sequences.setdefault((source, destination, sport, dport), random.getrandbits(32))
        sockets[source.version].sendto(packet(source, destination, sport, dport, sequence, chain),
                                       (str(destination), 0))
        sent += 1
    print(f"sent {sent} SYNs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
