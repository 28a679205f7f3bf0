#!/usr/bin/env bash
# make bench, issue 7: a spoofed SYN flood against `conntrackr run --source xdp --block xdp` at default settings.
#
# synflood sends as fast as it can (FLOOD_RATE=0) for FLOOD_SECONDS (30) from random sources among FLOOD_SOURCES
# (1,048,576, each in a /64 of its own inside 2001:db8:8000::/33) to random ports of the victim: enough SYNs per
# source that many look like scans, so the block rate limit is under fire too. Meanwhile a
# benign client in the generator's namespace, using its own lab addresses, connects to a listener on the victim
# once a second over IPv4 and IPv6 in turn, and the agent's metrics and memory are read once a second. The agent's
# output is counted (wc -l), not stored; its log is counted and its first lines kept.
#
# Prints a Markdown table: peak RSS (VmHWM), agent CPU, events written and lost, evictions, blocks and refusals,
# the client's connections, and whether the agent stayed up and answered every scrape. Fails when the agent died,
# did not stop cleanly or the client was not served. Usage: Tests/bench/flood-bench.sh BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib.sh"
. "$here/../e2e/lib-xdp.sh"
. "$here/lib-bench.sh"
lab_require_root
lab_require_cmds curl taskset python3
BENCH_BINARY=$(e2e_binary "$@")
seconds=${FLOOD_SECONDS:-30}
rate=${FLOOD_RATE:-0}
sources=${FLOOD_SOURCES:-1048576}
port=443

bench_build_generator
bench_lab_up
xdp_init
lab_listen victim "$port"

# Output and log through FIFOs to counters: a 30 s flood prints tens of millions of lines.
mkfifo "$LAB_TMP/out.fifo" "$LAB_TMP/err.fifo"
wc -l <"$LAB_TMP/out.fifo" >"$LAB_TMP/out.count" &
LAB_PIDS+=($!)
# (mawk reads a pipe in blocks, so it would hold back the "capture started" line: python passes lines on at once.)
python3 -c '
import sys
n = 0
for line in sys.stdin:
    n += 1
    if n <= 200:
        sys.stdout.write(line)
        sys.stdout.flush()
open(sys.argv[1], "w").write(f"{n}\n")' "$LAB_TMP/err.count" <"$LAB_TMP/err.fifo" >"$LAB_TMP/agent.err" &
LAB_PIDS+=($!)
bench_agent_start agent "$LAB_TMP/out.fifo" "$LAB_TMP/err.fifo" --source xdp --block xdp
agent=$BENCH_AGENT_PID
bench_scrape

client_seconds=$((seconds + 2))
lab_spawn attacker client python3 "$here/benign_client.py" --duration "$client_seconds" --timeout 10 \
    "$LAB_VICTIM_IP4/$LAB_VICTIM_IP6" "$port" "$LAB_CLIENT_IP4" "$LAB_CLIENT_IP6"
client=$LAB_LAST_PID
sleep 1 # the client's first connection before the flood
cpu0=$(bench_process_ns "$agent")
napi0=$(bench_thread_ns "$BENCH_NAPI_PID")
t0=$(bench_now_ns)
bench_generate_bg "$LAB_TMP/gen.out" "$rate" "$seconds" "$sources"

# Once a second while the flood lasts: is the agent alive, does it answer, how much memory does it hold.
scrapes=0 answered=0 peak_rss=0 samples=$LAB_TMP/samples.tsv
: >"$samples"
deadline=$((SECONDS + seconds + 30))
while lab_alive "$BENCH_GEN_PID" && ((SECONDS < deadline)); do
    sleep 1
    lab_alive "$BENCH_AGENT" || fail "the agent died during the flood: $(tail -n 5 "$LAB_TMP/agent.err")"
    scrapes=$((scrapes + 1))
    if BENCH_SCRAPE=$(timeout 2 nsenter --net="/run/netns/$LAB_NS_VICTIM" -- curl -sf "http://$BENCH_METRICS/metrics"); then
        answered=$((answered + 1))
        printf '%s\t%s\t%s\n' "$SECONDS" "$(bench_metric conntrackr_frames_total)" \
            "$(bench_metric conntrackr_new_connections_total)" >>"$samples"
    fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent/status")
    ((rss > peak_rss)) && peak_rss=$rss
done
wait "$BENCH_GEN_PID" 2>/dev/null || true
lab_forget_pid "$BENCH_GEN_PID"
read -r sent gen_seconds offered <"$LAB_TMP/gen.out" || fail "synflood failed: $(tail -n 2 "$LAB_TMP/synflood.err")"
t1=$(bench_now_ns)
cpu1=$(bench_process_ns "$agent")
napi1=$(bench_thread_ns "$BENCH_NAPI_PID")
lab_wait_exit "$client" 30 || fail "the benign client did not finish"
client_status=$LAB_EXIT_STATUS
client_summary=$(tail -n 1 "$LAB_TMP/client.out")

bench_settle
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$agent/status")
m() { bench_metric "$1"; }
frames=$(m conntrackr_frames_total)
new=$(m conntrackr_new_connections_total)
scans=$(m conntrackr_port_scans_total)
blocks=$(m 'conntrackr_blocks_total{origin="local"}')
limited=$(m 'conntrackr_blocks_refused_total{reason="rate_limited"}')
ringbuf=$(m 'conntrackr_capture_dropped_total{source="xdp_ringbuf"}')
out_dropped=$(m conntrackr_events_dropped_total)
pairs_evicted=$(m conntrackr_tracked_pairs_evicted_total)
conns_evicted=$(m conntrackr_tracked_connections_evicted_total)
blocked_packets=$(m conntrackr_blocked_packets_total)
kernel_pairs=$(m conntrackr_kernel_scan_pairs_inserted_total)
disagreements=$(m conntrackr_scan_rule_disagreements_total)
# The kernel memory of the program's maps (memlock bytes, as the kernel charges them): all, and the scan state's.
read -r maps_bytes scan_bytes < <(lab_exec victim 10 ip -j link show dev "$LAB_IF_VICTIM" | python3 -c '
import json, subprocess, sys
x = json.load(sys.stdin)[0].get("xdp", {})
prog = x.get("prog") or next((a["prog"] for a in x.get("attached", []) if "prog" in a), {})
ids = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog.get("id", 0))], capture_output=True,
                                text=True).stdout or "{}").get("map_ids", [])
maps = [json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(i)], capture_output=True, text=True).stdout)
        for i in ids]
print(sum(m.get("bytes_memlock", 0) for m in maps), sum(m.get("bytes_memlock", 0) for m in maps
      if m.get("name") == "ct_scan_pairs"))')

bench_agent_stop agent
for _ in $(seq 50); do [[ -s "$LAB_TMP/out.count" && -s "$LAB_TMP/err.count" ]] && break; sleep 0.1; done
lines=$(cat "$LAB_TMP/out.count" 2>/dev/null || echo "?")
log_lines=$(cat "$LAB_TMP/err.count" 2>/dev/null || echo "?")

python3 - "$seconds" "$sent" "$gen_seconds" "$offered" "$sources" "$frames" "$new" "$scans" "$blocks" "$limited" \
    "$ringbuf" "$out_dropped" "$pairs_evicted" "$conns_evicted" "$blocked_packets" "$hwm" "$peak_rss" \
    "$((cpu1 - cpu0))" "$((t1 - t0))" "$((napi1 - napi0))" "${kernel_pairs:-0}" "${disagreements:-0}" \
    "${maps_bytes:-0}" "${scan_bytes:-0}" "$lines" "$log_lines" "$scrapes" "$answered" "$client_summary" <<'EOF'
import math, sys
a = sys.argv[1:]
(seconds, sent, gen_seconds, offered, pool, frames, new, scans, blocks, limited, ringbuf, out_dropped,
 pairs_evicted, conns_evicted, blocked_packets, hwm, peak_rss, cpu_ns, wall_ns, napi_ns, kernel_pairs,
 disagreements, maps_bytes, scan_bytes) = (float(x) for x in a[:24])
lines, log_lines, scrapes, answered, client = a[24:]
kernel_capacity = 65536  # CT_SCAN_MAX_PAIRS (bpf/conntrackr.h)
distinct = pool * (1 - math.exp(-sent / pool))
n = lambda x: f"{x:,.0f}"
print(f"\n### Spoofed SYN flood against `run --source xdp --block xdp`, default settings\n")
print("| | |\n|---|---|")
print(f"| flood | {n(sent)} SYNs in {gen_seconds:.1f} s ({offered / 1e6:.2f} M/s offered), from ≈{n(distinct)} "
      f"random sources (of {n(pool)}), random ports |")
print(f"| frames the XDP program saw | {n(frames)} ({frames / sent * 100:.1f}% of those sent; the rest found "
      "the victim's veth ring full) |")
print(f"| agent peak RSS (VmHWM) | {hwm / 1024:.0f} MiB (highest VmRSS sampled each second: {peak_rss / 1024:.0f} MiB) |")
print(f"| agent CPU | {cpu_ns / wall_ns * 100:.0f}% of one core (the victim's receive path, NAPI thread: "
      f"{napi_ns / wall_ns * 100:.0f}%) |")
print(f"| new connections reported | {n(new)}; {n(scans)} port scans; output: {lines} lines |")
print(f"| events lost, counted | ring buffer full: {n(ringbuf)}; output behind: {n(out_dropped)} |")
print(f"| evictions | tracked pairs: {n(pairs_evicted)}; tracked connections: {n(conns_evicted)} |")
print(f"| kernel scan rule | {n(kernel_pairs)} pairs tracked, so ≥{n(max(0, kernel_pairs - kernel_capacity))} "
      f"evicted from its LRU of {n(kernel_capacity)}; {n(disagreements)} disagreements with user space counted |")
print(f"| BPF maps (kernel memory) | {maps_bytes / 2**20:.0f} MiB, of which the scan rule's state "
      f"{scan_bytes / 2**20:.0f} MiB; fixed whatever the flood |")
print(f"| blocks | {n(blocks)} made, {n(limited)} refused by --max-blocks-per-minute; "
      f"{n(blocked_packets)} packets dropped in XDP |")
print(f"| agent log | {log_lines} lines |")
print(f"| agent alive, metrics answered | yes, {answered}/{scrapes} scrapes (one a second) |")
print(f"| benign client (1 connection/s, IPv4 and IPv6 in turn, 10 s timeout: SYN sent 4 times) | {client} |")
EOF
((answered == scrapes)) || fail "the agent did not answer $((scrapes - answered)) of $scrapes scrapes"
[[ "$client_status" == 0 ]] || fail "the benign client was not always served: $client_summary ($(grep -c failed "$LAB_TMP/client.out") failures)"
