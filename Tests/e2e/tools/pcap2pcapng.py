#!/usr/bin/env python3
"""Converts a classic pcap file (microsecond or nanosecond, either byte order) into pcapng, keeping every record,
its timestamp at full resolution (if_tsresol 6 or 9), lengths and bytes. Used by record-captures.sh because
tcpdump 4.99 writes only classic pcap and editcap would pull in most of Wireshark.

Usage: pcap2pcapng.py IN.pcap OUT.pcapng [INTERFACE-NAME]
"""
import struct
import sys

MAGICS = {  # magic as read little-endian -> (byte order, fractional digits)
    0xA1B2C3D4: ("<", 6), 0xD4C3B2A1: (">", 6),
    0xA1B23C4D: ("<", 9), 0x4D3CB2A1: (">", 9),
}


def option(code, value):
    padding = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * padding


def block(block_type, body):
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def convert(source, target, interface_name):
    data = open(source, "rb").read()
    if len(data) < 24:
        raise SystemExit(f"{source}: shorter than a pcap header")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in MAGICS:
        raise SystemExit(f"{source}: not a classic pcap file (magic {magic:#010x})")
    order, digits = MAGICS[magic]
    _, _, _, _, snaplen, linktype = struct.unpack(order + "HHiIII", data[4:24])
    linktype &= 0xFFFF  # the upper bits hold FCS information in some writers

    out = bytearray()
    shb_options = option(4, b"conntrackr Tests/e2e/tools/pcap2pcapng.py") + option(0, b"")
    out += block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_options)
    idb_options = b""
    if interface_name:
        idb_options += option(2, interface_name.encode())
    idb_options += option(9, bytes([digits])) + option(0, b"")
    out += block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + idb_options)

    offset, records = 24, 0
    while offset < len(data):
        if offset + 16 > len(data):
            raise SystemExit(f"{source}: truncated record header at byte {offset}")
        seconds, fraction, caplen, length = struct.unpack(order + "IIII", data[offset:offset + 16])
        packet = data[offset + 16:offset + 16 + caplen]
        if len(packet) != caplen:
            raise SystemExit(f"{source}: truncated record at byte {offset}")
        stamp = seconds * 10**digits + fraction
        body = struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, caplen, length)
        body += packet + b"\0" * ((-caplen) % 4)
        out += block(0x00000006, body)
        offset += 16 + caplen
        records += 1
    open(target, "wb").write(out)
    print(f"{target}: {records} records, linktype {linktype}, if_tsresol 10^-{digits}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    convert(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
