#!/usr/bin/env python3
"""Counts what conntrackr should find in captures, using tcpdump's filters (an implementation independent of
conntrackr's parser), and writes expected.json and README.md for Tests/ConnCaptureTests/Captures.

Usage: capture_summary.py DIR DESCRIPTIONS
DESCRIPTIONS has one line per capture: "FILE<TAB>how it was made and what it contains" (in order).

Semantics applied (issue 2, defaults): a connection attempt is a TCP segment with SYN set and ACK clear, in
whatever direction; the same 4-tuple again within 60 s is a retransmit, not a new connection; a (source,
destination) pair is a port scan once SYNs reached more than 3 distinct destination ports within 60 s, reported
once, listing the distinct ports in the window at that moment in ascending order. Every capture here spans less
than 60 s, so the window never slides.
"""
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

SCAN_THRESHOLD = 3
SYN_FILTER = ("(tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)"
              " or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)")
# The filter's offsets assume the tag-free header, so tagged frames need "vlan" once per tag. The three depths
# match disjoint sets of frames, so their sum counts each SYN once.
FILTERS = [SYN_FILTER, f"vlan and ({SYN_FILTER})", f"vlan and vlan and ({SYN_FILTER})"]
LINE = re.compile(r"^(\d+\.\d+) .*?\bIP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\]")


def tcpdump(path, bpf=None):
    command = ["tcpdump", "-nn", "-tt", "--time-stamp-precision", "nano", "-r", str(path)]
    if bpf:
        command.append(bpf)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout.splitlines(), result.stderr


def file_format(path):
    head = path.read_bytes()[:64]
    magic = struct.unpack("<I", head[:4])[0]
    if magic == 0x0A0D0D0A:
        # SHB, then the first IDB: linktype and if_tsresol (this tool's own pcapng files carry one IDB).
        shb_len = struct.unpack("<I", head[4:8])[0]
        data = path.read_bytes()
        idb_type, idb_len = struct.unpack("<II", data[shb_len:shb_len + 8])
        assert idb_type == 1, "second block is not an interface description block"
        linktype = struct.unpack("<H", data[shb_len + 8:shb_len + 10])[0]
        return "pcapng", linktype
    formats = {0xA1B2C3D4: "pcap (microseconds)", 0xA1B23C4D: "pcap (nanoseconds)"}
    if magic not in formats:
        raise SystemExit(f"{path}: unknown magic {magic:#x}")
    return formats[magic], struct.unpack("<I", head[20:24])[0] & 0xFFFF


def summarize(path):
    rc, frames, stderr = tcpdump(path)
    if rc != 0:
        raise SystemExit(f"tcpdump -r {path} failed: {stderr.strip()}")
    link = re.search(r"link-type (\S+) \(([^)]*)\)", stderr)
    fmt, linktype = file_format(path)
    syns = []
    for bpf in FILTERS:
        rc, lines, stderr = tcpdump(path, bpf)
        if rc != 0:
            continue  # e.g. "vlan" on a link type without tags
        for line in lines:
            match = LINE.match(line)
            if not match:
                raise SystemExit(f"{path}: cannot parse tcpdump line: {line}")
            stamp, src, sport, dst, dport, flags = match.groups()
            assert "S" in flags and "." not in flags, line
            syns.append((stamp, src, int(sport), dst, int(dport)))
    syns.sort(key=lambda s: (int(s[0].split(".")[0]), int(s[0].split(".")[1])))
    first, last = float(frames[0].split()[0]), float(frames[-1].split()[0])
    if last - first >= 60:
        raise SystemExit(f"{path}: spans {last - first:.1f} s; the expected values assume less than 60 s")

    tuples, pairs = set(), {}
    for _, src, sport, dst, dport in syns:
        pair = pairs.setdefault((src, dst), {"src": src, "dst": dst, "syns": 0, "new_connections": 0,
                                             "ports": [], "port_scan": None})
        pair["syns"] += 1
        if (src, sport, dst, dport) not in tuples:
            tuples.add((src, sport, dst, dport))
            pair["new_connections"] += 1
        if dport not in pair["ports"]:
            pair["ports"].append(dport)
            if len(pair["ports"]) == SCAN_THRESHOLD + 1:
                pair["port_scan"] = sorted(pair["ports"])
    for pair in pairs.values():
        pair["distinct_ports"] = sorted(pair.pop("ports"))
    return {
        "format": fmt,
        "linktype": linktype,
        "linktype_name": link.group(1) if link else "?",
        "frames": len(frames),
        "syn_without_ack": len(syns),
        "new_connections": len(tuples),
        "port_scans": sum(1 for p in pairs.values() if p["port_scan"]),
        "pairs": sorted(pairs.values(), key=lambda p: (p["src"], p["dst"])),
        "bytes": path.stat().st_size,
    }


def ports_text(ports):
    if len(ports) > 12 and ports == list(range(ports[0], ports[-1] + 1)):
        return f"{ports[0]}-{ports[-1]} ({len(ports)})"
    return ",".join(map(str, ports))


README_HEAD = """# Real captures for replay tests

Recorded in the namespace lab of `Tests/e2e/lib.sh` by `Tests/e2e/record-captures.sh` (as root:
`Tests/e2e/record-captures.sh`; it rewrites every file here, this README and `expected.json`). The hosts, all on
one bridge, with no route out of the lab:

| host | IPv4 | IPv6 | MAC |
|---|---|---|---|
| victim (where tcpdump runs) | 203.0.113.5 | 2001:db8:1::5 | 02:00:00:00:00:05 |
| attacker (nmap) | 198.51.100.56 | 2001:db8:1::56 | 02:00:00:00:00:56 |
| client (benign) | 198.51.100.20 | 2001:db8:1::20 | 02:00:00:00:00:20 |

The victim listens on TCP 22, 80 and 443 (IPv4 and IPv6); other ports answer with RST. nmap 7.93 runs as
`nmap -n -Pn -sS --max-retries 1 -T4 -p PORTS TARGET`; the client's connections are complete handshakes closed
at once. tcpdump 4.99.3 / libpcap 1.10.3 record with `--immediate-mode -s 2048 -B 8192` (snap length 2048, so no
frame is cut), each reporting 0 packets dropped by the kernel. Checksum offload is off on the lab's interfaces,
so TCP checksums in the files are valid.

## Expected values

Counted by `Tests/e2e/tools/capture_summary.py` with tcpdump, not with conntrackr: SYN-without-ACK segments match
`{filter}` (with `vlan and` prepended once per tag for tagged frames). "New connections" are distinct 4-tuples
(each file spans less than 60 s, so every repeat of a 4-tuple is a retransmit); a pair is a port scan when it
reached more than {threshold} distinct destination ports, and the "scan report" column lists the ports of the
one expected `port_scan` event: the first {first} distinct ports in time order, sorted. Replay tests should assert
these exact numbers; `expected.json` holds the same data for them to load.
"""


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    directory = Path(sys.argv[1])
    entries = []
    for line in Path(sys.argv[2]).read_text().splitlines():
        if line.strip():
            name, _, text = line.partition("\t")
            entries.append((name, text))
    summaries = {name: summarize(directory / name) for name, _ in entries}
    document = json.dumps(
        {"semantics": {"scan_ports": SCAN_THRESHOLD, "scan_window_seconds": 60, "retransmit_seconds": 60},
         "syn_filter": SYN_FILTER, "files": summaries}, indent=2)
    # Port lists on one line each, so the file reads as a table.
    document = re.sub(r"\[\s+([0-9,\s]+?)\s+\]", lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",")) + "]",
                      document)
    (directory / "expected.json").write_text(document + "\n")

    out = [README_HEAD.format(filter=SYN_FILTER, threshold=SCAN_THRESHOLD, first=SCAN_THRESHOLD + 1)]
    for name, text in entries:
        s = summaries[name]
        out.append(f"### `{name}`\n\n{text}\n")
        out.append(f"{s['format']}, link type {s['linktype']} ({s['linktype_name']}), {s['bytes']} bytes, "
                   f"{s['frames']} frames, **{s['syn_without_ack']} SYN-without-ACK**, "
                   f"**{s['new_connections']} new connections**, **{s['port_scans']} port scan(s)**.\n")
        out.append("| source | destination | SYNs | new connections | distinct ports | scan report |")
        out.append("|---|---|---|---|---|---|")
        for p in s["pairs"]:
            scan = ",".join(map(str, p["port_scan"])) if p["port_scan"] else "none"
            out.append(f"| {p['src']} | {p['dst']} | {p['syns']} | {p['new_connections']} | "
                       f"{ports_text(p['distinct_ports'])} | {scan} |")
        out.append("")
    (directory / "README.md").write_text("\n".join(out))
    for name in summaries:
        s = summaries[name]
        print(f"{name}: {s['frames']} frames, {s['syn_without_ack']} SYN, {s['new_connections']} new, "
              f"{s['port_scans']} scans, {s['bytes']} bytes")


if __name__ == "__main__":
    main()
