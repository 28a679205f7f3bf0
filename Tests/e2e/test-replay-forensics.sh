#!/usr/bin/env bash
# e2e-timeout: 90
# Issue 15: replay as a forensic tool, on the recorded nmap captures (no namespaces needed).
# - Several files are one timeline: the capture cut into 3 pieces gives exactly the events of the whole, in any
#   order of the pieces, text and JSON; standard input still works.
# - An unreadable file among good ones is named on stderr (one line), the others are replayed, status non-zero.
# - --summary: the scanner's row has the scan's 30 ports (20-49) and SYN count; JSON is one final summary object.
# - Gzip and zstd files (told by their magic, not their name) replay exactly as the plain file, from a file or a
#   pipe; a cut or damaged one fails in one line.
# - Progress is drawn on a terminal (under script) and erased, and never written to a pipe.
# Usage: test-replay-forensics.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_cmds python3 gzip zstd script
bin=$(e2e_binary "$@")
lab_init
capture=$E2E_CAPTURES/nmap-syn-scan-v4.pcap
capture6=$E2E_CAPTURES/nmap-syn-scan-v6.pcap
[[ -s "$capture" && -s "$capture6" ]] || fail "the recorded nmap captures are missing (record-captures.sh)"
dir=$LAB_TMP
attacker=198.51.100.56
export TZ=UTC

# Runs `conntrackr replay ARGS...` (bounded); stdout/stderr in $dir/NAME.out/.err, status in $rc.
replay() { # NAME ARGS...
    local name=$1
    shift
    rc=0
    timeout -k 5 20 "$bin" replay "$@" >"$dir/$name.out" 2>"$dir/$name.err" </dev/null || rc=$?
    [[ $rc -lt 124 ]] || fail "replay $*: status $rc (timeout or signal; stderr: $(head -c 300 "$dir/$name.err"))"
}
same() { # NAME REFERENCE WHAT
    cmp -s "$dir/$1.out" "$dir/$2.out" || fail "$3: output differs from the whole capture's: $(diff "$dir/$2.out" "$dir/$1.out" | head -n 6)"
}

# Cut a capture into pieces of N records each: PREFIX-1.pcap, PREFIX-2.pcap, ... (a tcpdump -C rotation).
split_capture() { # CAPTURE RECORDS-PER-PIECE PREFIX
    python3 - "$@" <<'PY'
import struct, sys
source, per, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(source, "rb").read()
assert struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D), "expected a little-endian pcap"
header, records, offset = data[:24], [], 24
while offset < len(data):
    caplen = struct.unpack("<I", data[offset + 8:offset + 12])[0]
    records.append(data[offset:offset + 16 + caplen])
    offset += 16 + caplen
pieces = [records[i:i + per] for i in range(0, len(records), per)]
for number, piece in enumerate(pieces, 1):
    open(f"{prefix}-{number}.pcap", "wb").write(header + b"".join(piece))
print(len(records), len(pieces))
PY
}

# 1. One timeline from a rotated set, in order and out of order.
read -r records pieces < <(split_capture "$capture" 40 "$dir/rot")
assert_eq "$pieces" 3 "pieces of the $records-record capture"
for format in json text; do
    replay "whole-$format" "$capture" --format "$format"
    assert_eq "$rc" 0 "replay of the whole capture ($format)"
    [[ -s "$dir/whole-$format.out" ]] || fail "the whole capture gave no events ($format)"
    replay "inorder-$format" "$dir/rot-1.pcap" "$dir/rot-2.pcap" "$dir/rot-3.pcap" --format "$format"
    assert_eq "$rc" 0 "replay of the 3 pieces in order ($format; stderr: $(head -c 300 "$dir/inorder-$format.err"))"
    same "inorder-$format" "whole-$format" "3 pieces in order ($format)"
    replay "shuffled-$format" "$dir/rot-3.pcap" "$dir/rot-1.pcap" "$dir/rot-2.pcap" --format "$format"
    assert_eq "$rc" 0 "replay of the 3 pieces out of order ($format)"
    same "shuffled-$format" "whole-$format" "3 pieces given 3, 1, 2 ($format)"
done
assert_eq "$(events count "$dir/shuffled-json.out" event=port_scan src=$attacker)" 1 "scans across the pieces"
# Standard input among files, and alone through a pipe.
rc=0
timeout 20 "$bin" replay "$dir/rot-2.pcap" - "$dir/rot-3.pcap" --format json <"$dir/rot-1.pcap" >"$dir/stdin.out" 2>"$dir/stdin.err" || rc=$?
assert_eq "$rc" 0 "replay with - among files"
same stdin whole-json "standard input among files"
rc=0
cat "$capture" | timeout 20 "$bin" replay - --format json >"$dir/pipe.out" 2>"$dir/pipe.err" || rc=$?
assert_eq "$rc" 0 "replay - from a pipe"
same pipe whole-json "the capture through a pipe"
# Standard input open on a file past its start: the capture begins where the descriptor stands, not at the file's
# own start (here the head of another capture).
{ head -c 100 "$E2E_CAPTURES/benign-v4.pcap"; cat "$capture"; } >"$dir/offset.bin"
rc=0
{ dd bs=1 count=100 of=/dev/null 2>/dev/null; timeout 20 "$bin" replay - --format json; } <"$dir/offset.bin" \
    >"$dir/offset.out" 2>"$dir/offset.err" || rc=$?
assert_eq "$rc" 0 "replay - from a file 100 bytes in (stderr: $(head -c 300 "$dir/offset.err"))"
same offset whole-json "the capture from standard input opened past its start"
log "rotated set: $records records in $pieces pieces, any order, give the whole capture's $(wc -l <"$dir/whole-json.out") events"

# 2. One unreadable file among good ones: named, the others replayed, failure status.
printf 'not a capture\n' >"$dir/notes.txt"
replay unreadable "$dir/rot-1.pcap" "$dir/missing.pcap" "$dir/rot-2.pcap" "$dir/notes.txt" "$dir/rot-3.pcap" --format json
assert_ne "$rc" 0 "status with unreadable files among good ones"
assert_line_count "$dir/unreadable.err" 2 "stderr with two unreadable files"
assert_file_contains "$dir/unreadable.err" "$dir/missing.pcap" "the missing file's line"
assert_file_contains "$dir/unreadable.err" "$dir/notes.txt" "the text file's line"
same unreadable whole-json "the good files among unreadable ones"
log "unreadable files named: $(tr '\n' '|' <"$dir/unreadable.err")"

# 3. The summary of the real nmap capture: one scanner, ports 20-49.
replay summary-json "$capture" --format json --summary --events none
assert_eq "$rc" 0 "replay --summary --events none (stderr: $(head -c 300 "$dir/summary-json.err"))"
assert_line_count "$dir/summary-json.out" 1 "lines of --summary --events none in JSON"
assert_eq "$(events check "$dir/summary-json.out")" 0 "events before the summary (events.py check takes the summary)"
python3 - "$dir/summary-json.out" "$attacker" "$records" <<'PY' || fail "JSON summary: $(cat "$dir/summary-json.out")"
import json, sys
summary = json.loads(open(sys.argv[1]).read())
assert summary["kind"] == "summary", summary
assert summary["files"] == 1 and summary["files_failed"] == 0, summary
assert summary["frames"] == int(sys.argv[3]), summary
assert summary["attempts"] == 33 and summary["new_connections"] == 33 and summary["port_scans"] == 1, summary
scanners = summary["scanners"]
assert len(scanners) == 1 and scanners[0]["src"] == sys.argv[2], scanners
row = scanners[0]
assert row["ports"] == 30, row
assert row["port_list"] == list(range(20, 30)), row
assert row["syns"] == 30, row
assert row["first_seen"] <= row["would_block_at"] <= row["last_seen"], row
assert summary["scanners_omitted"] == 0, summary
PY
replay summary-text "$dir/rot-2.pcap" "$dir/rot-1.pcap" "$dir/rot-3.pcap" --summary
assert_eq "$rc" 0 "text summary of the rotated set"
head -n "$(wc -l <"$dir/whole-text.out")" "$dir/summary-text.out" | cmp -s - "$dir/whole-text.out" ||
    fail "--summary changed the events before it"
assert_file_contains "$dir/summary-text.out" "Scanners: 1" "the text summary's heading"
assert_match "$(grep -F "$attacker" "$dir/summary-text.out" | tail -n 1)" " 30 .*20,21,22,23,24,25,26,27,28,29,…" "the scanner's row"
assert_file_contains "$dir/summary-text.out" "Totals: 3 files, $records frames, 33 attempts, 33 new connections, 1 port scan, 0 malformed frames" "the totals"
replay summary-v6 "$capture6" --format json --summary --events port_scan
assert_eq "$(tail -n 1 "$dir/summary-v6.out" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["scanners"]), s["scanners"][0]["src"])')" \
    "1 2001:db8:1::56" "the IPv6 capture's scanner"
log "summary: $(grep -F "$attacker" "$dir/summary-text.out" | tail -n 1)"

# 4. Gzip and zstd: identical to the plain file, whatever the name; in a set; through a pipe; a cut one fails in
# one line (zstd's frames carry checksums, as the zstd command writes them).
compressed() { # CODEC: compresses standard input to standard output
    case $1 in
        gzip) gzip -c -n ;;
        zstd) zstd -q -c ;;
    esac
}
for codec in gzip zstd; do
    compressed "$codec" <"$capture" >"$dir/capture.pcap.$codec"
    cp "$dir/capture.pcap.$codec" "$dir/capture-$codec-no-suffix.pcap"
    compressed "$codec" <"$dir/rot-1.pcap" >"$dir/rot-1.pcap.$codec"
    for format in json text; do
        replay "$codec-$format" "$dir/capture.pcap.$codec" --format "$format"
        assert_eq "$rc" 0 "replay of the $codec capture ($format; stderr: $(head -c 300 "$dir/$codec-$format.err"))"
        same "$codec-$format" "whole-$format" "the $codec capture ($format)"
    done
    replay "$codec-named" "$dir/capture-$codec-no-suffix.pcap" --format json
    same "$codec-named" whole-json "the $codec capture named .pcap"
    replay "$codec-set" "$dir/rot-3.pcap" "$dir/rot-1.pcap.$codec" "$dir/rot-2.pcap" --format json
    same "$codec-set" whole-json "a set with a $codec piece"
    rc=0
    compressed "$codec" <"$capture" | timeout 20 "$bin" replay - --format json >"$dir/$codec-pipe.out" \
        2>"$dir/$codec-pipe.err" || rc=$?
    assert_eq "$rc" 0 "$codec through a pipe"
    same "$codec-pipe" whole-json "$codec through a pipe"
    size=$(stat -c %s "$dir/capture.pcap.$codec")
    head -c $((size * 2 / 3)) "$dir/capture.pcap.$codec" >"$dir/cut.pcap.$codec"
    replay "$codec-cut" "$dir/cut.pcap.$codec" --format json
    [[ $rc -ne 0 && $rc -lt 124 ]] || fail "a cut $codec capture: status $rc"
    assert_line_count "$dir/$codec-cut.err" 1 "stderr of a cut $codec capture"
    assert_file_contains "$dir/$codec-cut.err" "$codec" "the cut $codec capture's reason"
    log "$codec: identical output; cut file: $(cat "$dir/$codec-cut.err")"
done
python3 - "$dir/capture.pcap.zstd" "$dir/damaged.pcap.zst" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
for index in range(12, len(data) - 4, 5):
    data[index] ^= 0x5A
open(sys.argv[2], "wb").write(data)
PY
replay zst-damaged "$dir/damaged.pcap.zst" --format json
[[ $rc -ne 0 && $rc -lt 124 ]] || fail "a damaged zstd capture: status $rc"
assert_line_count "$dir/zst-damaged.err" 1 "stderr of a damaged zstd capture"
log "zstd, damaged: $(cat "$dir/zst-damaged.err")"

# 5. Progress: on a terminal (script's pseudo-terminal) drawn with \r and erased; nothing in a pipe or a file.
python3 - "$capture" "$dir/big.pcap" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
records, offset = [], 24
while offset < len(data):
    caplen = struct.unpack("<I", data[offset + 8:offset + 12])[0]
    records.append(bytearray(data[offset:offset + 16 + caplen]))
    offset += 16 + caplen
out = bytearray(data[:24])
for round in range(600):  # the capture 600 times, one second apart: about 100,000 records
    for record in records:
        copy = bytearray(record)
        seconds = struct.unpack("<I", copy[0:4])[0] + round
        copy[0:4] = struct.pack("<I", seconds)
        out += copy
open(sys.argv[2], "wb").write(out)
PY
rc=0
timeout 60 script -qfec "$bin replay $dir/big.pcap --events none --summary" "$dir/tty.typescript" >/dev/null </dev/null || rc=$?
assert_eq "$rc" 0 "replay under script"
grep -aq $'\rreplay: ' "$dir/tty.typescript" || fail "no progress line on the terminal: $(head -c 300 "$dir/tty.typescript" | od -c | head -n 5)"
grep -aq 'frames, ' "$dir/tty.typescript" || fail "the progress line does not count frames"
grep -aq $'\r\e\[K' "$dir/tty.typescript" || fail "the progress line is not erased"
rc=0
timeout 60 "$bin" replay "$dir/big.pcap" --events none --summary >"$dir/piped.out" 2>"$dir/piped.err" </dev/null || rc=$?
assert_eq "$rc" 0 "replay into a pipe"
[[ ! -s "$dir/piped.err" ]] || fail "progress written to a file: $(head -c 200 "$dir/piped.err" | od -c | head -n 3)"
rc=0
timeout 60 "$bin" replay "$dir/big.pcap" --events none 2>&1 | cat >"$dir/piped2.out" || rc=$?
[[ ! -s "$dir/piped2.out" ]] || fail "progress written to a pipe: $(head -c 200 "$dir/piped2.out" | od -c | head -n 3)"
log "progress drawn on a terminal ($(grep -ac $'\r' "$dir/tty.typescript") lines with \\r), none in a pipe or file"
