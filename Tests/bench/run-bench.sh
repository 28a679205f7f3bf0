#!/usr/bin/env bash
# make bench: replay speed of conntrackr against tcpdump's filter-only pass over the same capture.
# Usage: Tests/bench/run-bench.sh BINARY
#   BENCH_FRAMES, BENCH_RUNS: the interleaved comparison's capture size and run count (2,000,000 and 7).
#   BENCH_REPLAY_LARGE=0 skips the large run (BENCH_LARGE_FRAMES frames, 20,000,000: 1.8 GB, cached in
#   bench-out/ as the small capture is).
#   BENCH_NICE: the niceness every measured command runs at (default 0); on a machine other jobs share, -10 gives
#   both programs a fairer share of the cores (the two-thread replay needs two of them).
set -euo pipefail
binary=${1:?usage: run-bench.sh BINARY}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/bench-out"
frames=${BENCH_FRAMES:-2000000}
runs=${BENCH_RUNS:-7}
large=${BENCH_REPLAY_LARGE:-1}
large_frames=${BENCH_LARGE_FRAMES:-20000000}
niceness=${BENCH_NICE:-0}
mkdir -p "$out"
synth="$(dirname "$binary")/conntrackr-synth"
[ -x "$synth" ] || { echo "bench: $synth is missing (build it: swift build -c release --product conntrackr-synth)"; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench: GNU time (/usr/bin/time) is missing: apt-get install time"; exit 1; }

# A generated capture of N frames, made once and kept in bench-out/.
capture_of() {
    local capture="$out/mixed-$1.pcap"
    [ -f "$capture" ] || "$synth" "$capture" --frames "$1" --sources 40000 --scanners 200 --seed 1 >&2
    echo "$capture"
}

# The same question tcpdump can answer with a kernel-style filter: which frames are SYNs without ACK.
filter='(tcp[13] & 0x12) == 2 or (ip6 and ip6[6] == 6 and (ip6[53] & 0x12) == 2) or (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60))'

# Wall and CPU seconds of one run, output discarded: wall from bash's EPOCHREALTIME (microseconds), CPU (user +
# system, all threads) from `times` (getrusage of the subshell's children, to the millisecond; GNU time rounds to
# 10 ms, a tenth of tcpdump's whole run here).
measure() {
    (
        start=$EPOCHREALTIME
        nice -n "$niceness" "$@" >/dev/null 2>&1 || true
        end=$EPOCHREALTIME
        echo "$start $end"
        times
    ) | awk '
        NR == 1 { wall = $2 - $1 }
        NR == 3 {
            split($1, user, "m"); split($2, kernel, "m"); sub("s", "", user[2]); sub("s", "", kernel[2])
            cpu = user[1] * 60 + user[2] + kernel[1] * 60 + kernel[2]
        }
        END { printf "%.4f %.4f\n", wall, cpu }'
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
# Peak resident set of one run, in KiB.
peak_kb() { /usr/bin/time -f '%M' nice -n "$niceness" "$@" 2>&1 >/dev/null | tail -1; }

capture=$(capture_of "$frames")
ours_wall=(); ours_cpu=(); theirs_wall=(); theirs_cpu=()
for _ in $(seq "$runs"); do  # interleaved, so both see the same machine
    read -r wall cpu < <(measure "$binary" replay "$capture" --format json)
    ours_wall+=("$wall"); ours_cpu+=("$cpu")
    read -r wall cpu < <(measure tcpdump -r "$capture" -w /dev/null "$filter")
    theirs_wall+=("$wall"); theirs_cpu+=("$cpu")
done
ow=$(printf '%s\n' "${ours_wall[@]}" | median)
oc=$(printf '%s\n' "${ours_cpu[@]}" | median)
tw=$(printf '%s\n' "${theirs_wall[@]}" | median)
tc=$(printf '%s\n' "${theirs_cpu[@]}" | median)
events=$("$binary" replay "$capture" --format json | wc -l)
syns=$(tcpdump -r "$capture" -nn "$filter" 2>/dev/null | wc -l)
peak=$(peak_kb "$binary" replay "$capture" --format json)
awk -v n="$niceness" -v f="$frames" -v ow="$ow" -v oc="$oc" -v tw="$tw" -v tc="$tc" -v e="$events" -v s="$syns" -v r="$runs" -v m="$peak" 'BEGIN {
    printf "replay benchmark: %d frames (%d SYNs without ACK), medians of %d interleaved runs, niceness %d\n", f, s, r, n
    printf "  %-44s %9s %9s %10s\n", "", "wall", "CPU", "frames/s"
    printf "  %-44s %8.4fs %8.4fs %8.2f M  (%d event lines, peak RSS %.0f MiB)\n", "conntrackr replay --format json > /dev/null", ow, oc, f / ow / 1e6, e, m / 1024
    printf "  %-44s %8.4fs %8.4fs %8.2f M\n", "tcpdump -r FILE -w /dev/null SYN-filter", tw, tc, f / tw / 1e6
    printf "  ratio conntrackr / tcpdump: wall %.2f (goal: at most 1.00), CPU %.2f\n", ow / tw, oc / tc
}'

if [ "$large" != 0 ]; then
    big=$(capture_of "$large_frames")
    read -r wall cpu < <(measure "$binary" replay "$big" --format json)
    peak=$(peak_kb "$binary" replay "$big" --format json)
    read -r twall tcpu < <(measure tcpdump -r "$big" -w /dev/null "$filter")
    size=$(stat -c %s "$big")
    awk -v f="$large_frames" -v w="$wall" -v c="$cpu" -v m="$peak" -v tw="$twall" -v tc="$tcpu" -v b="$size" 'BEGIN {
        printf "large replay: %d frames (%.1f GB), one run each\n", f, b / 1e9
        printf "  %-44s %8.2fs wall %8.2fs CPU  peak RSS %.0f MiB\n", "conntrackr replay --format json > /dev/null", w, c, m / 1024
        printf "  %-44s %8.2fs wall %8.2fs CPU\n", "tcpdump -r FILE -w /dev/null SYN-filter", tw, tc
    }'
fi
