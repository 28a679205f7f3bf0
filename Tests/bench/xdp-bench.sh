#!/usr/bin/env bash
# make bench, issue 3: in the namespace lab, with synflood offering SYNs the way a NIC delivers them,
#   (a) the highest offered rate at which `run --source xdp` and `run --source pcap` lose no event, side by side;
#   (b) the rate at which blocked sources are dropped in XDP by conntrackr's program (maps filled with
#       `conntrackr blocklist add` and bpftool), by xdp-filter (xdp-tools: its IPv6 source filter, a hash map,
#       filled with `xdp-filter ip` and bpftool) and in nftables (conntrackr's own table layout: interval sets at the
#       raw prerouting hook), with 1, 10,000 and 100,000 blocked entries, and the victim's CPU at a paced rate;
#   (c) issue 12: the XDP program's cost per SYN with the scan rule enforced in it and without.
# Prints Markdown tables for the README. Usage: Tests/bench/xdp-bench.sh BINARY
#
# Settings (environment): BENCH_RUNS (3 repetitions, medians reported), BENCH_STEP_SECONDS (3),
# BENCH_RATES (offered SYN/s of the capture ladder), BENCH_PACED_RATE (300000), BENCH_NICE (0; e.g. -10 on a
# machine shared with other jobs), BENCH_NAPI_FIFO (1), BENCH_PARTS ("capture drop enforce"), BENCH_DROP_ENTRIES
# ("1 10000 100000"), BENCH_DROP_POINTS ("xdp xdptrie xdpfilter nft"; xdptrie: conntrackr's blocks as /65s in its
# LPM trie, the lookup before the exact-match maps), BENCH_ENFORCE_SOURCES ("1 1048576").
#
# The capture ladder: sources are 16M random addresses of 2001:db8:8000::/33, random ports, each SYN a new
# connection. An nftables rule at the raw prerouting hook drops the flood behind both captures, so the victim's
# stack does not spend its core answering every SYN (the capture is what is measured, not the stack). "Lost" is
# offered minus the agent's conntrackr_new_connections_total; it includes frames the victim's veth never took
# off its ring because its core was saturated ("unseen"), which no capture can see.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib.sh"
. "$here/../e2e/lib-xdp.sh"
. "$here/lib-bench.sh"
lab_require_root
lab_require_cmds nft ethtool curl bpftool taskset python3 xdp-filter
BENCH_BINARY=$(e2e_binary "$@")
runs=${BENCH_RUNS:-3}
step=${BENCH_STEP_SECONDS:-3}
rates=${BENCH_RATES:-50000 100000 200000 400000 700000 1000000 1500000 2000000}
paced=${BENCH_PACED_RATE:-300000}
parts=${BENCH_PARTS:-capture drop enforce}
drop_entries=${BENCH_DROP_ENTRIES:-1 10000 100000}
drop_points=${BENCH_DROP_POINTS:-xdp xdptrie xdpfilter nft}
# Raw rows and the report are kept in bench-out/ (ignored by git).
mkdir -p "$E2E_REPO/bench-out"
results=$E2E_REPO/bench-out/xdp-bench.tsv
report=$E2E_REPO/bench-out/xdp-bench.md
: >"$results"

bench_build_generator
bench_lab_up
xdp_init
started=$SECONDS

# ---------------------------------------------------------------------------------------------------------------
# (a) Capture ladder

sink_up() {
    lab_exec victim 10 nft -f - <<EOF || fail "cannot create the nftables sink"
table inet conntrackr_sink {
    chain prerouting {
        type filter hook prerouting priority raw; policy accept;
        ip6 saddr $BENCH_FLOOD_PREFIX counter drop
    }
}
EOF
}
sink_count() {
    lab_exec victim 10 nft list chain inet conntrackr_sink prerouting | grep -o 'packets [0-9]*' | awk '{print $2}'
}

capture_step() { # SOURCE RATE REP
    local source=$1 rate=$2 rep=$3 label
    label=$([[ $source == xdp ]] && echo xdp_ringbuf || echo pcap)
    bench_scrape
    local r0 d0 o0 n0 c0 a0
    r0=$(bench_metric conntrackr_new_connections_total)
    d0=$(bench_metric "conntrackr_capture_dropped_total{source=\"$label\"}")
    o0=$(bench_metric conntrackr_events_dropped_total)
    n0=$(sink_count)
    c0=$(bench_thread_ns "$BENCH_NAPI_PID")
    a0=$(bench_process_ns "$BENCH_AGENT_PID")
    bench_generate "$rate" "$step"
    local c1 a1
    c1=$(bench_thread_ns "$BENCH_NAPI_PID")
    a1=$(bench_process_ns "$BENCH_AGENT_PID")
    bench_settle
    printf 'capture\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$source" "$rate" "$rep" "$GEN_RATE" "$GEN_SENT" \
        "$(($(sink_count) - n0))" "$(($(bench_metric conntrackr_new_connections_total) - r0))" \
        "$(($(bench_metric "conntrackr_capture_dropped_total{source=\"$label\"}") - d0))" \
        "$(($(bench_metric conntrackr_events_dropped_total) - o0))" \
        "$(awk -v c=$((c1 - c0)) -v s="$GEN_SECONDS" 'BEGIN {printf "%.3f", (s > 0 ? c / s / 1e9 : 0)}')" \
        "$(awk -v c=$((a1 - a0)) -v s="$GEN_SECONDS" 'BEGIN {printf "%.3f", (s > 0 ? c / s / 1e9 : 0)}')" >>"$results"
    log "capture $source $rate/s run $rep: $(tail -n 1 "$results" | cut -f5-)"
}

if [[ " $parts " == *" capture "* ]]; then
    sink_up
    for rep in $(seq "$runs"); do
        for source in xdp pcap; do # alternated, so both see the same machine
            bench_agent_start "agent-$source" /dev/null "" --source "$source" --block none --format json
            for rate in $rates; do capture_step "$source" "$rate" "$rep"; done
            bench_agent_stop "agent-$source"
        done
    done
    lab_exec victim 10 nft delete table inet conntrackr_sink
fi

# ---------------------------------------------------------------------------------------------------------------
# (b) Drop rate for blocked sources: conntrackr's XDP program, xdp-filter and nftables on the same veth

# N blocked entries and N sources, one in each: source I is 2001:db8:8000:: with 0x8000_0000 | I in bits 32-63 (as
# synflood makes them), blocked as its /64 by conntrackr and nftables (conntrackr's IPv6 block unit, which goes to
# its exact-match map) and as the address itself by xdp-filter (which matches whole addresses only).
entries_prefixes() { # N
    python3 -c "import sys; [print(f'2001:db8:{(0x80000000 | i) >> 16:x}:{i & 0xffff:x}::/64') for i in range(int(sys.argv[1]))]" "$1"
}

cli() { nsenter --net="/run/netns/$LAB_NS_VICTIM" -- "$BENCH_BINARY" blocklist "$@" --pin-dir "$XDP_PINS"; }

# Fills conntrackr's pinned blocklist with N /64s: the CLI for one, bpftool's batch mode for many (one CLI process
# per entry would take minutes), straight into the IPv6 exact-match map ct_block_v6_exact, where the CLI and the
# program's own blocks put a /64 (key: the /64's 8 bytes). The value is struct ct_block_value: no expiry, no drops
# yet, since now, manual. With KIND "trie", N /65s (each holding its source) in the LPM trie ct_block_v6 instead:
# the lookup every block took before the exact-match maps, measured the same way (the trie holds 65,536).
xdp_fill() { # N [KIND]
    cli flush >/dev/null
    if (($1 == 1)) && [[ "${2:-exact}" == exact ]]; then
        cli add 2001:db8:8000::/64 --ttl 0 >/dev/null || fail "blocklist add failed"
    else
        python3 - "$1" "$XDP_PINS" "${2:-exact}" >"$LAB_TMP/fill.batch" <<'EOF'
import struct, sys, time
n, pins, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
value = struct.pack("<QQqBB6x", 0, 0, time.time_ns(), 1, 0)
path = f"{pins}/ct_block_v6_exact" if kind == "exact" else f"{pins}/ct_block_v6"
for i in range(n):
    key = bytes.fromhex("20010db8") + struct.pack(">I", 0x80000000 | i)
    if kind != "exact":
        key = struct.pack("<I", 65) + key + bytes(8)
    print(f"map update pinned {path} key hex {key.hex(' ')} value hex {value.hex(' ')}")
EOF
        timeout 300 bpftool batch file "$LAB_TMP/fill.batch" >/dev/null || fail "bpftool could not fill the blocklist"
    fi
    local listed
    listed=$(cli list | tail -n 1)
    [[ "$listed" == "$1 blocked,"* ]] || fail "the XDP blocklist holds '$listed', expected $1 entries"
}

# xdp-filter (xdp-tools) on the victim's veth, `load -p allow -f ipv6` (only its IPv6 filter compiled in: the
# others would only add lookups), sources denied with `ip ADDR -m src`, which land in its pinned per-CPU hash
# filter_ipv6 (10,000 entries at most). xdp-filter pins under /sys/fs/bpf/xdp-filter whatever LIBXDP_BPFFS says, so
# it runs in a mount namespace of its own where a bpffs directory of this run's own is bound over /sys/fs/bpf:
# its pins land there (removed at cleanup) and never meet another run's.
XF_BPFFS=/sys/fs/bpf/conntrackr-xdpfilter-$LAB_SUFFIX
xf() {
    timeout 60 unshare --mount --propagation private -- sh -c \
        'd=$0 n=$1; shift; mount --bind "$d" /sys/fs/bpf && exec nsenter --net="$n" -- xdp-filter "$@"' \
        "$XF_BPFFS" "/run/netns/$LAB_NS_VICTIM" "$@"
}
xdpfilter_up() { # N
    if [[ ! -d "$XF_BPFFS" ]]; then
        mkdir -p "$XF_BPFFS"
        lab_register_pin_dir "$XF_BPFFS"
        lab_on_cleanup "xf unload $LAB_IF_VICTIM"
    fi
    xf load -m native -p allow -f ipv6 "$LAB_IF_VICTIM" || fail "xdp-filter load failed"
    bench_pin_napi
    # The first entry with the CLI, which shows the value it writes; the rest with bpftool's batch mode and that
    # value (one xdp-filter process per entry would take minutes).
    xf ip 2001:db8:8000:: -m src >/dev/null || fail "xdp-filter ip failed"
    local map=$XF_BPFFS/xdp-filter/filter_ipv6 value
    [[ -e "$map" ]] || fail "xdp-filter's map is not at $map"
    value=$(bpftool -j map lookup pinned "$map" key hex 20 01 0d b8 80 00 00 00 00 00 00 00 00 00 00 00 |
        python3 -c 'import json, sys
v = json.load(sys.stdin)
v = v["values"][0]["value"]  # per CPU; bpftool writes one value to every CPU, as the CLI does
print(" ".join(x[2:] for x in v))') || fail "cannot read xdp-filter's entry"
    if (($1 > 1)); then
        python3 - "$1" "$map" "$value" >"$LAB_TMP/xf.batch" <<'EOF'
import struct, sys
n, path, value = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(1, n):
    key = bytes.fromhex("20010db8") + struct.pack(">I", 0x80000000 | i) + bytes(8)
    print(f"map update pinned {path} key hex {key.hex(' ')} value hex {value}")
EOF
        timeout 300 bpftool batch file "$LAB_TMP/xf.batch" >/dev/null || fail "bpftool could not fill xdp-filter's map"
    fi
    local held
    held=$(bpftool -j map dump pinned "$map" | python3 -c "import json, sys; print(len(json.load(sys.stdin)))")
    [[ "$held" == "$1" ]] || fail "xdp-filter's map holds $held entries, expected $1"
}
xdpfilter_down() {
    xf unload "$LAB_IF_VICTIM" >/dev/null || fail "xdp-filter unload failed"
    bench_pin_napi
}

# conntrackr's nftables layout (Sources/ConnBlock/NftablesScript.swift) with N blocked prefixes.
nft_up() { # N
    {
        echo "table inet conntrackr_bench {"
        echo "    set allowed4 { type ipv4_addr; flags interval; auto-merge; }"
        echo "    set allowed6 { type ipv6_addr; flags interval; auto-merge; }"
        echo "    set blocked4 { type ipv4_addr; flags interval, timeout; counter; }"
        echo "    set blocked6 { type ipv6_addr; flags interval, timeout; counter; }"
        echo "    chain prerouting {"
        echo "        type filter hook prerouting priority raw; policy accept;"
        echo "        ip saddr @allowed4 accept"
        echo "        ip6 saddr @allowed6 accept"
        echo "        ip saddr @blocked4 drop"
        echo "        ip6 saddr @blocked6 drop"
        echo "    }"
        echo "}"
        echo "add element inet conntrackr_bench allowed6 { $LAB_VICTIM_IP6/128, ::1/128 }"
        entries_prefixes "$1" | paste -sd, | sed 's/^/add element inet conntrackr_bench blocked6 { /; s/$/ }/'
    } >"$LAB_TMP/bench.nft"
    lab_exec victim 120 nft -f "$LAB_TMP/bench.nft" || fail "cannot create the nftables table"
}
nft_drops() {
    lab_exec victim 30 nft list set inet conntrackr_bench blocked6 | grep -o 'packets [0-9]*' |
        awk '{s += $2} END {print s + 0}'
}
# Both XDP drop points are counted the same way: the victim veth's own count of XDP_DROP verdicts.
veth_xdp_drops() {
    lab_exec victim 10 ethtool -S "$LAB_IF_VICTIM" | awk '$1 ~ /xdp_drops:$/ {s += $2} END {print s + 0}'
}
xdp_drops() { veth_xdp_drops; }
xdptrie_drops() { veth_xdp_drops; }
xdpfilter_drops() { veth_xdp_drops; }

# The run time of the XDP program attached to the victim's veth: "RUN_TIME_NS RUN_COUNT" (0 0 without one). The
# kernel counts them while run-time statistics are on (bench_stats_on).
xdp_prog_runtime() {
    local id
    id=$(lab_exec victim 10 ip -j link show dev "$LAB_IF_VICTIM" | python3 -c 'import json, sys
x = json.load(sys.stdin)[0].get("xdp", {})
p = x.get("prog") or next((a["prog"] for a in x.get("attached", []) if "prog" in a), {})
print(p.get("id", ""))')
    [[ -n "$id" ]] || { echo 0 0; return; }
    bpftool -j prog show id "$id" | python3 -c 'import json, sys
p = json.load(sys.stdin)
print(p.get("run_time_ns", 0), p.get("run_cnt", 0))'
}

# Turns on the kernel's BPF run-time statistics for the drop part with BPF_ENABLE_STATS, which keeps them on only
# while the descriptor it returns stays open (here, in a helper process killed at cleanup): nothing to restore,
# even if this script dies. They cost every BPF program a little (two clock reads a run) meanwhile.
bench_stats_on() {
    python3 -c 'import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
attr = (ctypes.c_uint8 * 16)()  # union bpf_attr, enable_stats.type = BPF_STATS_RUN_TIME (0)
fd = libc.syscall(321, 32, attr, 4)  # SYS_bpf, BPF_ENABLE_STATS
if fd < 0:
    sys.exit(f"BPF_ENABLE_STATS failed: errno {ctypes.get_errno()}")
time.sleep(float(sys.argv[1]))' 3600 &
    LAB_PIDS+=("$!")
    BENCH_STATS_PID=$!
    sleep 0.3
    lab_alive "$BENCH_STATS_PID" || fail "cannot turn on BPF run-time statistics"
}

drop_step() { # POINT ENTRIES MODE REP
    local point=$1 entries=$2 mode=$3 rep=$4 rate d0 c0 c1 t0 n0 t1 n1
    rate=$([[ $mode == max ]] && echo 0 || echo "$paced")
    d0=$("${point}_drops")
    read -r t0 n0 < <(xdp_prog_runtime)
    c0=$(bench_thread_ns "$BENCH_NAPI_PID")
    bench_generate "$rate" "$step" "$entries"
    c1=$(bench_thread_ns "$BENCH_NAPI_PID")
    read -r t1 n1 < <(xdp_prog_runtime)
    sleep 0.2
    # The last column: the XDP program's own run time per run (ns), from the kernel's statistics (nft: none).
    printf 'drop\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$point" "$entries" "$mode" "$rep" "$GEN_RATE" "$GEN_SENT" \
        "$(awk -v d=$(($("${point}_drops") - d0)) -v s="$GEN_SECONDS" 'BEGIN {printf "%.0f", (s > 0 ? d / s : 0)}')" \
        "$(awk -v c=$((c1 - c0)) -v s="$GEN_SECONDS" 'BEGIN {printf "%.3f", (s > 0 ? c / s / 1e9 : 0)}')" \
        "$(awk -v t=$((t1 - t0)) -v n=$((n1 - n0)) 'BEGIN {printf "%.1f", (n > 0 ? t / n : 0)}')" >>"$results"
    log "drop $point $entries $mode run $rep: $(tail -n 1 "$results" | cut -f6-)"
}

if [[ " $parts " == *" drop "* ]]; then
    bench_stats_on
    for entries in $drop_entries; do
        for rep in $(seq "$runs"); do # the drop points alternate, so that all see the same machine
            if [[ " $drop_points " == *" xdp "* ]]; then
                bench_agent_start agent-block /dev/null "" --source xdp --block xdp --format json
                xdp_fill "$entries"
                drop_step xdp "$entries" max "$rep"
                drop_step xdp "$entries" paced "$rep"
                bench_agent_stop agent-block
            fi
            if [[ " $drop_points " == *" xdptrie "* ]] && ((entries <= 65536)); then
                bench_agent_start agent-block /dev/null "" --source xdp --block xdp --format json
                xdp_fill "$entries" trie
                drop_step xdptrie "$entries" max "$rep"
                drop_step xdptrie "$entries" paced "$rep"
                bench_agent_stop agent-block
            fi
            if [[ " $drop_points " == *" xdpfilter "* ]]; then
                if ((entries > 10000)); then
                    ((rep == 1)) && log "drop xdpfilter $entries: skipped, xdp-filter's maps hold 10,000 entries"
                else
                    xdpfilter_up "$entries"
                    drop_step xdpfilter "$entries" max "$rep"
                    drop_step xdpfilter "$entries" paced "$rep"
                    xdpfilter_down
                fi
            fi
            if [[ " $drop_points " == *" nft "* ]]; then
                nft_up "$entries"
                drop_step nft "$entries" max "$rep"
                drop_step nft "$entries" paced "$rep"
                lab_exec victim 10 nft delete table inet conntrackr_bench
            fi
        done
    done
fi

# ---------------------------------------------------------------------------------------------------------------
# (c) The cost of the scan rule in the XDP program (issue 12): SYNs that never make a scan (each source reaching
# port 443 only, so every SYN updates its pair's state and none is dropped), paced, to `run --source xdp --block
# xdp` with kernel enforcement on and off. From one hot source (its state always cached) and from 1,048,576 (each
# SYN a new pair: the LRU's insert and eviction path). The nftables sink drops them behind XDP, so the victim's
# stack does not answer each one.

enforce_step() { # MODE SOURCES REP
    local mode=$1 sources=$2 rep=$3 c0 c1 t0 n0 t1 n1
    read -r t0 n0 < <(xdp_prog_runtime)
    c0=$(bench_thread_ns "$BENCH_NAPI_PID")
    bench_generate "$paced" "$step" "$sources" "$BENCH_FLOOD_BASE" --dport 443
    c1=$(bench_thread_ns "$BENCH_NAPI_PID")
    read -r t1 n1 < <(xdp_prog_runtime)
    printf 'enforce\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$sources" "$rep" "$GEN_SENT" \
        "$(awk -v c=$((c1 - c0)) -v n="$GEN_SENT" 'BEGIN {printf "%.1f", (n > 0 ? c / n : 0)}')" \
        "$(awk -v t=$((t1 - t0)) -v n=$((n1 - n0)) 'BEGIN {printf "%.1f", (n > 0 ? t / n : 0)}')" >>"$results"
    log "enforce $mode $sources sources run $rep: $(tail -n 1 "$results" | cut -f5-)"
}

if [[ " $parts " == *" enforce "* ]]; then
    lab_alive "${BENCH_STATS_PID:-}" 2>/dev/null || bench_stats_on
    sink_up
    for sources in ${BENCH_ENFORCE_SOURCES:-1 1048576}; do
        for rep in $(seq "$runs"); do
            for mode in on off; do # alternated, so both see the same machine
                bench_agent_start agent-enforce /dev/null "" --source xdp --block xdp --format json \
                    "--$([[ $mode == off ]] && echo no-)kernel-enforcement"
                enforce_step "$mode" "$sources" "$rep"
                bench_agent_stop agent-enforce
            done
        done
    done
    lab_exec victim 10 nft delete table inet conntrackr_sink
fi

# ---------------------------------------------------------------------------------------------------------------
# Report

python3 - "$results" "$runs" "$step" "$paced" "$((SECONDS - started))" "$BENCH_NICE" \
    "$( ((${BENCH_NAPI_FIFO:-1})) && echo SCHED_FIFO || echo SCHED_OTHER)" >"$report" <<'EOF'
import collections, statistics, sys
path, runs, step, paced, elapsed, nice, napi_policy = sys.argv[1:8]
rows = [line.rstrip("\n").split("\t") for line in open(path)]
med = lambda xs: statistics.median(xs) if xs else float("nan")

def rate(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"

capture = collections.defaultdict(list)
for r in rows:
    if r[0] == "capture":
        source, target = r[1], int(r[2])
        offered, sent, delivered, reported, counted, out_dropped, napi, agent = map(float, r[4:12])
        capture[(source, target)].append(dict(offered=offered, sent=sent, delivered=delivered, reported=reported,
                                              counted=counted, out=out_dropped, napi=napi, agent=agent))
if capture:
    print(f"\n### Capture: events lost against offered SYN rate (median of {runs} runs, {step} s each)\n")
    print("| target SYN/s | XDP: offered | XDP: lost | pcap: offered | pcap: lost | victim NAPI core XDP / pcap "
          "| agent CPU XDP / pcap |")
    print("|---|---|---|---|---|---|---|")
    lossless, capture_lossless, stopped = {}, {}, set()
    for target in sorted({t for _, t in capture}):
        cells = {}
        for source in ("xdp", "pcap"):
            runs_ = [r for r in capture.get((source, target), []) if r["sent"]]
            pick = lambda f: med([f(r) for r in runs_])
            c = dict(offered=pick(lambda r: r["offered"]), lost=pick(lambda r: r["sent"] - r["reported"]),
                     frac=pick(lambda r: (r["sent"] - r["reported"]) / r["sent"]),
                     unseen=pick(lambda r: (r["sent"] - r["delivered"]) / r["sent"]),
                     counted=pick(lambda r: r["counted"] / r["sent"]),
                     silent=pick(lambda r: r["delivered"] - r["reported"] - r["counted"]),
                     napi=pick(lambda r: r["napi"]), agent=pick(lambda r: r["agent"]))
            c["capture_lost"] = pick(lambda r: r["delivered"] - r["reported"])
            # The highest rate up to which every step was lossless (a lucky step above a lossy one does not count).
            for table, key in ((lossless, "lost"), (capture_lossless, "capture_lost")):
                if runs_ and (key, source) not in stopped:
                    if c[key] <= 0:
                        table[source] = c["offered"]
                    else:
                        stopped.add((key, source))
            cells[source] = c

        def lost(c):
            if c["lost"] <= 0:
                return "0"
            if c["frac"] < 1e-4:
                return f"{c['lost']:,.0f} SYNs"
            text = f"{c['frac'] * 100:.2f}% (ring {c['unseen'] * 100:.2f}%, counted {c['counted'] * 100:.2f}%"
            return text + (f", uncounted {c['silent']:,.0f})" if c["silent"] > 0 else ")")

        x, p = cells["xdp"], cells["pcap"]
        print(f"| {rate(target)} | {rate(x['offered'])} | {lost(x)} | {rate(p['offered'])} | {lost(p)} | "
              f"{x['napi'] * 100:.0f}% / {p['napi'] * 100:.0f}% | {x['agent'] * 100:.0f}% / {p['agent'] * 100:.0f}% |")
    best = lambda table, source: rate(table.get(source) or 0)
    print(f"\nHighest offered rate up to which no event was lost: XDP {best(lossless, 'xdp')} SYN/s, pcap "
          f"{best(lossless, 'pcap')} SYN/s. Up to which the capture itself lost nothing (every frame the victim "
          f"took off its ring was reported): XDP {best(capture_lossless, 'xdp')} SYN/s, pcap "
          f"{best(capture_lossless, 'pcap')} SYN/s.  ")
    print("\"ring\": frames the victim's veth never took off its ring because its core was saturated (the same "
          "receive path for both sources, before either capture); \"counted\": drops the agent counted (libpcap's, "
          "or XDP ring buffer full); \"uncounted\": lost inside the agent without a count (a bug if ever "
          "non-zero).")

drop = collections.defaultdict(list)
for r in rows:
    if r[0] == "drop":
        # offered, sent, drops/s, NAPI core fraction, program run time per packet (ns; absent in older rows)
        drop[(r[1], int(r[2]), r[3])].append((float(r[5]), float(r[7]), float(r[8]),
                                              float(r[9]) if len(r) > 9 else 0.0))
if drop:
    print(f"\n### Dropping blocked sources on the same veth (median of {runs} runs, {step} s each)\n")
    print("| drop point | blocked entries | drops/s, generator unpaced | offered | victim CPU per dropped packet "
          f"(paced at {rate(int(paced))}/s) | XDP program run time per packet |")
    print("|---|---|---|---|---|---|")
    summary = {}
    names = (("xdp", "XDP (conntrackr's program)"), ("xdptrie", "XDP (conntrackr, blocks in its LPM trie)"),
             ("xdpfilter", "XDP (xdp-filter, xdp-tools)"),
             ("nft", "nftables set, raw prerouting"))
    for entries in sorted({e for _, e, _ in drop}):
        for point, name in names:
            full, slow = drop.get((point, entries, "max"), []), drop.get((point, entries, "paced"), [])
            if not full and not slow:
                continue
            drops, offered = med([d for _, d, _, _ in full]), med([o for o, _, _, _ in full])
            per_packet = med([c * 1e9 / d for _, d, c, _ in slow if d > 0])
            # Run time from both steps: the program's cost per packet hardly depends on the rate.
            runtime = med([t for _, _, _, t in full + slow if t > 0])
            summary[(point, entries)] = (drops, per_packet, runtime)
            shown = f"{runtime:.0f} ns" if runtime == runtime else "-"
            print(f"| {name} | {entries:,} | {rate(drops)} | {rate(offered)} | {per_packet:.0f} ns | {shown} |")
    print()
    for entries in sorted({e for _, e, _ in drop}):
        for other, name in (("xdpfilter", "xdp-filter"), ("nft", "nftables")):
            if ("xdp", entries) in summary and (other, entries) in summary:
                (xd, xc, xt), (od, oc, ot) = summary[("xdp", entries)], summary[(other, entries)]
                text = (f"{entries:,} {'entry' if entries == 1 else 'entries'}: conntrackr drops {xd / od:.2f}x as "
                        f"many packets a second as {name}, at {xc / oc:.2f}x its CPU per packet")
                if xt == xt and ot == ot:
                    text += f" and {xt / ot:.2f}x its program run time"
                print(text + ".  ")
enforce = collections.defaultdict(list)
for r in rows:
    if r[0] == "enforce":
        enforce[(int(r[2]), r[1])].append((float(r[5]), float(r[6])))
if enforce:
    print(f"\n### The scan rule in the XDP program: cost per SYN that makes no scan (median of {runs} runs, {step} s "
          f"each, paced at {rate(int(paced))}/s)\n")
    print("| sources | kernel enforcement | XDP program run time per SYN | victim CPU per SYN |")
    print("|---|---|---|---|")
    for sources in sorted({s for s, _ in enforce}):
        cells = {}
        for mode in ("off", "on"):
            got = enforce.get((sources, mode), [])
            cells[mode] = (med([t for _, t in got if t > 0]), med([c for c, _ in got if c > 0]))
            print(f"| {sources:,} | {mode} | {cells[mode][0]:.0f} ns | {cells[mode][1]:.0f} ns |")
        (t_off, c_off), (t_on, c_on) = cells["off"], cells["on"]
        if t_off > 0 and c_off > 0:
            print(f"| {sources:,} | on / off | {t_on / t_off:.2f}x | {c_on / c_off:.2f}x (budget: 1.50x) |")
print(f"\n(bench lab: generator on CPU 0, victim NAPI thread on CPU 1 ({napi_policy}), nice {nice}; {elapsed} s in all.)")
EOF
cat "$report"
