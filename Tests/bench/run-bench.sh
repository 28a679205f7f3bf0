#!/usr/bin/env bash
# make bench: replay speed of conntrackr against tcpdump's filter-only pass over the same capture.
# Usage: Tests/bench/run-bench.sh BINARY   (BENCH_FRAMES, BENCH_RUNS override the defaults)
set -euo pipefail
binary=${1:?usage: run-bench.sh BINARY}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/bench-out"
frames=${BENCH_FRAMES:-2000000}
runs=${BENCH_RUNS:-7}
mkdir -p "$out"
capture="$out/mixed-$frames.pcap"
synth="$(dirname "$binary")/conntrackr-synth"
[ -x "$synth" ] || { echo "bench: $synth is missing (make release builds it)"; exit 1; }
[ -f "$capture" ] || "$synth" "$capture" --frames "$frames" --sources 40000 --scanners 200 --seed 1

# The same question tcpdump can answer with a kernel-style filter: which frames are SYNs without ACK.
filter='(tcp[13] & 0x12) == 2 or (ip6 and ip6[6] == 6 and (ip6[53] & 0x12) == 2) or (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60))'

# CPU seconds (user + system) of one run, from bash's `times` (getrusage of the subshell's children, to the
# millisecond; GNU time rounds to 10 ms, a tenth of tcpdump's whole run here).
cpu_seconds() {
    ( "$@" >/dev/null 2>&1; times ) | tail -1 | awk '{
        split($1, user, "m"); split($2, kernel, "m"); sub("s", "", user[2]); sub("s", "", kernel[2])
        print user[1] * 60 + user[2] + kernel[1] * 60 + kernel[2] }'
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

command -v /usr/bin/time >/dev/null || { echo "bench: GNU time (/usr/bin/time) is missing: apt-get install time"; exit 1; }
ours=(); theirs=()
for _ in $(seq "$runs"); do  # interleaved, so both see the same machine
    ours+=("$(cpu_seconds "$binary" replay "$capture" --format json)")
    theirs+=("$(cpu_seconds tcpdump -r "$capture" -w /dev/null "$filter")")
done
ours_median=$(printf '%s\n' "${ours[@]}" | median)
theirs_median=$(printf '%s\n' "${theirs[@]}" | median)
events=$("$binary" replay "$capture" --format json | wc -l)
syns=$(tcpdump -r "$capture" -nn "$filter" 2>/dev/null | wc -l)
peak_kb=$(/usr/bin/time -f '%M' "$binary" replay "$capture" --format json 2>&1 >/dev/null | tail -1)
awk -v f="$frames" -v o="$ours_median" -v t="$theirs_median" -v e="$events" -v s="$syns" -v r="$runs" -v m="$peak_kb" 'BEGIN {
    printf "replay benchmark: %d frames (%d SYNs without ACK), median CPU time of %d interleaved runs\n", f, s, r
    printf "  %-44s %8.4f s  %6.2f M frames/s  (%d event lines, peak RSS %.0f MiB)\n", "conntrackr replay --format json > /dev/null", o, f / o / 1e6, e, m / 1024
    printf "  %-44s %8.4f s  %6.2f M frames/s\n", "tcpdump -r FILE -w /dev/null SYN-filter", t, f / t / 1e6
    printf "  ratio conntrackr / tcpdump: %.2f (budget: 2.00)\n", o / t
}'
