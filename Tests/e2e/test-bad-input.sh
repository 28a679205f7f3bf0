#!/usr/bin/env bash
# e2e-timeout: 120
# `conntrackr replay` on bad input (issue 2): a missing file, text files, an empty file, a capture cut inside its
# file header, a capture cut mid-record (inside a record's data and inside a record header), and an unknown link
# type. Each must exit non-zero without a signal (status < 128), print exactly one line on stderr, and print no
# events, except the cut captures, which first print exactly the events of their complete records. And pcapng files
# whose record times are extreme (if_tsoffset, huge timestamps) replay cleanly.
# Needs no namespaces. Usage: test-bad-input.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_cmds python3
bin=$(e2e_binary "$@")
lab_init
capture=$E2E_CAPTURES/nmap-syn-scan-v4.pcap
[[ -s "$capture" ]] || fail "$capture is missing (committed captures come from record-captures.sh)"
dir=$LAB_TMP

# Runs `conntrackr replay FILE ARGS...` (bounded); leaves stdout/stderr in $dir/NAME.out/.err, status in $rc.
replay() { # NAME FILE ARGS...
    local name=$1 file=$2
    shift 2
    rc=0
    timeout -k 5 20 "$bin" replay "$file" "$@" >"$dir/$name.out" 2>"$dir/$name.err" </dev/null || rc=$?
}

# The bad-input contract: failure status that is not a signal, one line on stderr.
expect_rejected() { # NAME WHAT
    local name=$1 what=$2
    [[ $rc -ne 124 ]] || fail "$what: replay did not finish within 20 s"
    [[ $rc -ne 0 ]] || fail "$what: exit status 0, expected a failure (stdout: $(head -c 200 "$dir/$name.out"))"
    [[ $rc -lt 128 ]] || fail "$what: died with signal $((rc - 128)) (stderr: $(head -c 400 "$dir/$name.err"))"
    assert_line_count "$dir/$name.err" 1 "$what: stderr"
    [[ -n "$(tr -d '[:space:]' <"$dir/$name.err")" ]] || fail "$what: the stderr line is empty"
    log "$what: status $rc, stderr: $(cat "$dir/$name.err")"
}

expect_no_events() { # NAME WHAT
    [[ ! -s "$dir/$1.out" ]] || fail "$2: printed events: $(head -c 200 "$dir/$1.out")"
}

reject() { # NAME FILE WHAT [ARGS...]: rejected, no events
    local name=$1 file=$2 what=$3
    shift 3
    replay "$name" "$file" "$@"
    expect_rejected "$name" "$what"
    expect_no_events "$name" "$what"
}

# The whole capture is fine (so the failures below are about the damage, not the file).
replay good "$capture" --format json
assert_eq "$rc" 0 "replay of the intact capture (stderr: $(head -c 300 "$dir/good.err"))"
[[ -s "$dir/good.out" ]] || fail "replay of the intact capture printed no events"

reject missing "$dir/does-not-exist.pcap" "missing file"
printf 'This is a text file, not a capture.\nIt has a second line.\nAnd a third, to be longer than a header.\n' \
    >"$dir/text.txt"
reject text "$dir/text.txt" "text file"
printf 'hi\n' >"$dir/short.txt"
reject short "$dir/short.txt" "3-byte text file"
: >"$dir/empty.pcap"
reject empty "$dir/empty.pcap" "empty file"
head -c 12 "$capture" >"$dir/header-cut.pcap"
reject header-cut "$dir/header-cut.pcap" "capture cut inside its file header"
mkdir -p "$dir/a-directory.pcap"
reject directory "$dir/a-directory.pcap" "a directory"

# Unknown link type: the same capture with LINKTYPE_USER0 (147) in its file header.
python3 - "$capture" "$dir/user0.pcap" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4, "expected a little-endian microsecond pcap"
data[20:24] = struct.pack("<I", 147)
open(sys.argv[2], "wb").write(data)
PY
reject user0 "$dir/user0.pcap" "unknown link type (147)"

# Crafted pcapng record times: the capture's frames in pcapng whose interface adds an extreme if_tsoffset (libpcap
# adds it unchecked) or whose timestamps are huge. Replay used to trap (status 132); record times are now clamped to
# 1970..2200, so each replays like the intact capture: status 0, its events, nothing on stderr.
for crafted in offset-min:6:-9223372036854775808:us offset-max:6:9223372036854775807:us \
    before-epoch:9:-10000000000000:ns huge-seconds:0:0:max huge-binary:129:4611686018427387903:max; do
    IFS=: read -r name resolution offset units <<<"$crafted"
    python3 - "$capture" "$dir/ts-$name.pcapng" "$resolution" "$offset" "$units" <<'PY'
import struct, sys
source, target, resolution, offset, units = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = open(source, "rb").read()
assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4, "expected a little-endian microsecond pcap"
linktype = struct.unpack("<I", data[20:24])[0]
out = bytearray(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
options = struct.pack("<HHB3x", 9, 1, resolution) + struct.pack("<HHq", 14, 8, offset) + struct.pack("<HH", 0, 0)
out += struct.pack("<IIHHI", 1, 20 + len(options), linktype, 0, 262144) + options + struct.pack("<I", 20 + len(options))
position = 24
while position < len(data):
    seconds, micros, caplen, origlen = struct.unpack("<IIII", data[position:position + 16])
    frame = data[position + 16:position + 16 + caplen]
    position += 16 + caplen
    stamp = {"us": seconds * 10**6 + micros, "ns": (seconds * 10**6 + micros) * 1000, "max": 2**64 - 1}[units]
    padded = frame + bytes(-len(frame) % 4)
    total = 32 + len(padded)
    out += struct.pack("<IIIIIII", 6, total, 0, stamp >> 32, stamp & 0xFFFFFFFF, caplen, origlen) + padded
    out += struct.pack("<I", total)
open(target, "wb").write(out)
PY
    for format in json text; do
        replay "ts-$name-$format" "$dir/ts-$name.pcapng" --format "$format"
        [[ $rc -lt 128 ]] || fail "crafted pcapng ($name, $format): died with signal $((rc - 128)) (stderr: $(head -c 400 "$dir/ts-$name-$format.err"))"
        assert_eq "$rc" 0 "replay of the crafted pcapng ($name, $format; stderr: $(head -c 300 "$dir/ts-$name-$format.err"))"
        [[ -s "$dir/ts-$name-$format.out" ]] || fail "crafted pcapng ($name, $format): no events"
        [[ ! -s "$dir/ts-$name-$format.err" ]] || fail "crafted pcapng ($name, $format): stderr: $(head -c 300 "$dir/ts-$name-$format.err")"
    done
    log "crafted pcapng ($name): replayed, $(wc -l <"$dir/ts-$name-json.out") events"
done

# Cut mid-record: find the record boundaries, cut inside the data of a record about two thirds into the file, and
# inside the header of the next one. The events must be exactly those of the file cut at the boundary before it.
read -r boundary mid_data next_boundary mid_header < <(python3 - "$capture" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
offsets, offset = [], 24
while offset < len(data):
    offsets.append(offset)
    caplen = struct.unpack("<I", data[offset + 8:offset + 12])[0]
    offset += 16 + caplen
assert offset == len(data), "the committed capture itself is not whole"
i = len(offsets) * 2 // 3
caplen = struct.unpack("<I", data[offsets[i] + 8:offsets[i] + 12])[0]
print(offsets[i], offsets[i] + 16 + caplen // 2, offsets[i + 1], offsets[i + 1] + 7)
PY
)
head -c "$boundary" "$capture" >"$dir/whole-records.pcap"
head -c "$mid_data" "$capture" >"$dir/cut-data.pcap"
head -c "$next_boundary" "$capture" >"$dir/whole-records-2.pcap"
head -c "$mid_header" "$capture" >"$dir/cut-header.pcap"
for format in json text; do
    for cut in data header; do
        if [[ $cut == data ]]; then whole=whole-records; else whole=whole-records-2; fi
        replay "$whole-$format" "$dir/$whole.pcap" --format "$format"
        assert_eq "$rc" 0 "replay of the capture cut at a record boundary ($format; stderr: $(head -c 300 "$dir/$whole-$format.err"))"
        [[ -s "$dir/$whole-$format.out" ]] || fail "the complete records before the cut gave no events ($format)"
        replay "cut-$cut-$format" "$dir/cut-$cut.pcap" --format "$format"
        expect_rejected "cut-$cut-$format" "capture cut inside a record's $cut ($format)"
        cmp -s "$dir/$whole-$format.out" "$dir/cut-$cut-$format.out" ||
            fail "capture cut inside a record's $cut ($format): stdout differs from the events of its complete records: $(diff "$dir/$whole-$format.out" "$dir/cut-$cut-$format.out" | head -n 5)"
    done
done
[[ $(wc -l <"$dir/whole-records-json.out") -lt $(wc -l <"$dir/good.out") ]] ||
    fail "the cut did not remove any event; choose a cut that does"

# A bad flag value gets the argument parser's error (non-zero, not a signal), not a crash.
rc=0
timeout 20 "$bin" replay "$capture" --format yaml >"$dir/flag.out" 2>"$dir/flag.err" || rc=$?
[[ $rc -ne 0 && $rc -lt 128 ]] || fail "--format yaml: exit status $rc, expected a usage error"
expect_no_events flag "--format yaml"
log "bad input rejected cleanly"
