# shellcheck shell=bash
# Tests/bench/lib-bench.sh: the benchmark lab (source after Tests/e2e/lib.sh and lib-xdp.sh).
#
# Two namespaces joined by ONE veth pair, no bridge: the generator (the e2e lab's "attacker" namespace) and the
# victim. synflood's XDP_TX frames land straight in the victim's receive ring, as a NIC would deliver them. The
# generator's veth also carries the benign client's addresses (198.51.100.20, 2001:db8:1::20), so the client's
# connections cross the flooded link. A spare veth pair, down, stays in the generator's namespace for synflood's
# --spare (see synflood.c). Lab rules hold: only lab addresses; no default route anywhere; flood sources are
# 2001:db8:8000::/33, for which the victim has no route at all, so not even its answers leave the victim.
#
# Making the victim's CPU measurable (LAB-NOTES): GRO and threaded NAPI on the victim's veth put all receive work
# (XDP, the stack, nftables) in one kernel thread, napi/IF-N, pinned to CPU 1 and read from /proc/PID/schedstat.
# The NAPI thread is SCHED_FIFO (BENCH_NAPI_FIFO=0: SCHED_OTHER), see bench_pin_napi. The generator runs on
# CPU 0; the agent where the scheduler puts it. BENCH_NICE (default 0) renices the generator, the NAPI thread and
# the agent, for runs on a machine that other jobs share.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${BENCH_NICE:=0}"
BENCH_FLOOD_BASE=2001:db8:8000::   # spoofed sources: BASE with an index in bits 32-63 (one /64 each)
BENCH_FLOOD_PREFIX=2001:db8:8000::/33
BENCH_GEN_CPU=0
BENCH_VICTIM_CPU=1
BENCH_METRICS=127.0.0.1:9542       # the agent's default, inside the victim's namespace

# Builds synflood (once) and sets SYNFLOOD to its path.
bench_build_generator() {
    SYNFLOOD=$("$BENCH_DIR/synflood/build.sh" "$E2E_REPO/.build/bench") || fail "cannot build synflood"
}

# Builds the two-namespace lab described above.
bench_lab_up() {
    lab_init
    LAB_IF_SPARE=ctz-$LAB_SUFFIX
    LAB_IF_SPARE2=cty-$LAB_SUFFIX # the spare's peer, for a second generator running at the same time
    log "bench lab: building with suffix $LAB_SUFFIX"
    lab_add_ns "$LAB_NS_VICTIM"
    lab_add_ns "$LAB_NS_ATTACKER"
    lab_run ip link add name "$LAB_IF_ATTACKER" netns "$LAB_NS_ATTACKER" address "$LAB_ATTACKER_MAC" type veth \
        peer name "$LAB_IF_VICTIM" netns "$LAB_NS_VICTIM" address "$LAB_VICTIM_MAC"
    lab_run ip link add name "$LAB_IF_SPARE" netns "$LAB_NS_ATTACKER" type veth \
        peer name "$LAB_IF_SPARE2" netns "$LAB_NS_ATTACKER"
    local a
    for a in "$LAB_VICTIM_IP4/24" "$LAB_VICTIM_IP6/64"; do
        lab_run ip -n "$LAB_NS_VICTIM" addr add "$a" dev "$LAB_IF_VICTIM" nodad
    done
    for a in "$LAB_ATTACKER_IP4/24" "$LAB_CLIENT_IP4/24" "$LAB_ATTACKER_IP6/64" "$LAB_CLIENT_IP6/64"; do
        lab_run ip -n "$LAB_NS_ATTACKER" addr add "$a" dev "$LAB_IF_ATTACKER" nodad
    done
    lab_run ip -n "$LAB_NS_VICTIM" link set "$LAB_IF_VICTIM" up
    lab_run ip -n "$LAB_NS_ATTACKER" link set "$LAB_IF_ATTACKER" up
    lab_run ip -n "$LAB_NS_VICTIM" route add 198.51.100.0/24 dev "$LAB_IF_VICTIM" scope link
    lab_run ip -n "$LAB_NS_ATTACKER" route add 203.0.113.0/24 dev "$LAB_IF_ATTACKER" scope link
    # GRO gives the victim's veth a NAPI context even without XDP (veth then also accepts XDP_TX frames from its
    # peer), threaded NAPI runs it in a kernel thread of its own.
    lab_run ip netns exec "$LAB_NS_VICTIM" ethtool -K "$LAB_IF_VICTIM" gro on
    lab_run ip netns exec "$LAB_NS_VICTIM" sh -c "echo 1 > /sys/class/net/$LAB_IF_VICTIM/threaded"
    bench_pin_napi
    log "bench lab: up (generator $LAB_IF_ATTACKER -> victim $LAB_IF_VICTIM, NAPI thread $BENCH_NAPI_PID)"
}

# Finds the victim's NAPI thread (kernel threads show their full name, napi/IF-ID, in /proc/PID/comm), pins it
# to the victim's CPU and sets BENCH_NAPI_PID. Called again after anything that may recreate it.
bench_pin_napi() {
    local file found=()
    for file in $(grep -l "^napi/$LAB_IF_VICTIM-" /proc/[0-9]*/comm 2>/dev/null); do
        file=${file#/proc/}
        found+=("${file%/comm}")
    done
    ((${#found[@]} == 1)) || fail "expected one NAPI thread for $LAB_IF_VICTIM, found ${#found[@]}"
    BENCH_NAPI_PID=${found[0]}
    taskset -pc "$BENCH_VICTIM_CPU" "$BENCH_NAPI_PID" >/dev/null || fail "cannot pin the NAPI thread"
    ((BENCH_NICE == 0)) || renice -n "$BENCH_NICE" -p "$BENCH_NAPI_PID" >/dev/null
    # Receive work normally runs in softirq context, which preempts every task on its CPU. A NAPI thread at
    # SCHED_OTHER instead waits its turn behind the agent (and any other job), and the veth ring (256 frames)
    # overflows meanwhile: the capture benchmark then measures the scheduler, not the capture. SCHED_FIFO gives it
    # back the softirq's precedence (RT throttling still leaves 5% to the rest); BENCH_NAPI_FIFO=0 turns it off.
    if ((${BENCH_NAPI_FIFO:-1})); then
        chrt -f -p 10 "$BENCH_NAPI_PID" >/dev/null || fail "cannot make the NAPI thread SCHED_FIFO"
    fi
}

# CPU time of a thread (schedstat, ns) or of a whole process (utime + stime of /proc/PID/stat, in ns).
bench_thread_ns() { awk '{print $1}' "/proc/$1/schedstat" 2>/dev/null || echo 0; }
bench_process_ns() {
    local tick
    tick=$(getconf CLK_TCK)
    # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$tick" '{printf "%.0f\n", ($12 + $13) * 1e9 / t}' ||
        echo 0
}
bench_now_ns() { date +%s%N; }

# Runs synflood in the generator's namespace on CPU 0: RATE frames/s (0 = as fast as it goes) for SECONDS, from
# COUNT sources starting at SRC (default: the flood range), to the victim's IPv6 address unless --dst is given in
# the extra options. BENCH_SPARE names the down veth synflood attaches to (default $LAB_IF_SPARE; a second
# generator running meanwhile needs the other one). Sets GEN_SENT, GEN_SECONDS, GEN_RATE.
bench_generate() { # RATE SECONDS [COUNT] [SRC] [EXTRA-SYNFLOOD-OPTIONS...]
    local rate=$1 seconds=$2 count=${3:-16777216} src=${4:-$BENCH_FLOOD_BASE} out packets
    shift $(($# < 4 ? $# : 4))
    packets=$(awk -v r="$rate" -v s="$seconds" 'BEGIN {printf "%.0f\n", (r > 0 ? int(r * s) + 64 : 100000000 * s)}')
    out=$(timeout -k 5 "$(awk -v s="$seconds" 'BEGIN {print int(s) + 30}')" \
        ip netns exec "$LAB_NS_ATTACKER" nice -n "$BENCH_NICE" taskset -c "$BENCH_GEN_CPU" "$SYNFLOOD" \
        --interface "$LAB_IF_ATTACKER" --spare "${BENCH_SPARE:-$LAB_IF_SPARE}" --dst-mac "$LAB_VICTIM_MAC" \
        --dst "$LAB_VICTIM_IP6" --src "$src" --src-count "$count" --dports 1-65535 \
        --rate "$rate" --packets "$packets" --seconds "$seconds" "$@" 2>"$LAB_TMP/synflood.err") ||
        fail "synflood failed: $(tail -n 2 "$LAB_TMP/synflood.err")"
    read -r GEN_SENT GEN_SECONDS GEN_RATE < <(sed 's/[a-z]*=//g' <<<"$out")
    [[ "$GEN_SENT" =~ ^[0-9]+$ ]] || fail "synflood printed '$out'"
}

# bench_generate in the background; its figures go to FILE ("SENT SECONDS RATE", nothing if it failed, with the
# reason in $LAB_TMP/synflood.err). Sets BENCH_GEN_PID.
bench_generate_bg() { # FILE RATE SECONDS [COUNT] [SRC] [EXTRA...]
    local file=$1
    shift
    : >"$file"
    (bench_generate "$@" >/dev/null && echo "$GEN_SENT $GEN_SECONDS $GEN_RATE" >"$file") &
    BENCH_GEN_PID=$!
    LAB_PIDS+=("$BENCH_GEN_PID")
}

# Starts the agent in the victim's network namespace (nsenter, so bpffs is visible) with its metrics on the
# default address there, stdout to OUT and stderr to ERR (default $LAB_TMP/NAME.err; if ERR is a FIFO, its reader
# must copy the log to $LAB_TMP/NAME.err); waits for "capture started" there. Sets BENCH_AGENT (the process to
# signal) and BENCH_AGENT_PID (the agent itself, for /proc).
bench_agent_start() { # NAME OUT ERR ARGS...
    local name=$1 out=$2 err=${3:-$LAB_TMP/$1.err}
    shift 3
    [[ -p "$err" ]] || : >"$err"
    timeout --foreground -k 5 "$LAB_SPAWN_MAX" nsenter --net="/run/netns/$LAB_NS_VICTIM" -- \
        nice -n "$BENCH_NICE" "$BENCH_BINARY" run --interface "$LAB_IF_VICTIM" --pin-dir "$XDP_PINS" \
        --metrics-address "$BENCH_METRICS" "$@" >"$out" 2>"$err" </dev/null &
    BENCH_AGENT=$!
    LAB_PIDS+=("$BENCH_AGENT")
    local deadline=$((SECONDS + 20))
    until grep -q 'capture started' "$LAB_TMP/$name.err" 2>/dev/null; do
        lab_alive "$BENCH_AGENT" || fail "$name exited before capture started: $(tail -n 3 "$LAB_TMP/$name.err")"
        ((SECONDS < deadline)) || fail "$name did not start within 20 s: $(tail -n 3 "$LAB_TMP/$name.err")"
        sleep 0.1
    done
    # timeout's child is the agent (nsenter and nice exec it).
    BENCH_AGENT_PID=$(pgrep -P "$BENCH_AGENT" | head -n 1)
    [[ -n "$BENCH_AGENT_PID" ]] || fail "cannot find the pid of $name"
    bench_pin_napi # attaching XDP may have recreated the NAPI context
}

bench_agent_stop() { # NAME
    lab_stop "$BENCH_AGENT" INT 8
    [[ "$LAB_STOP_TIMELY" == 1 && "$LAB_EXIT_STATUS" == 0 ]] ||
        fail "$1 did not stop cleanly (status $LAB_EXIT_STATUS): $(tail -n 3 "$LAB_TMP/$1.err")"
    bench_pin_napi
}

# The agent's metrics as Prometheus text, in BENCH_SCRAPE.
bench_scrape() {
    BENCH_SCRAPE=$(timeout 5 nsenter --net="/run/netns/$LAB_NS_VICTIM" -- \
        curl -sf "http://$BENCH_METRICS/metrics") || fail "cannot scrape the agent's metrics"
}
# A series' value in BENCH_SCRAPE, 0 when absent; SERIES is the full name with labels, as exposed.
bench_metric() {
    awk -v s="$1" '$1 == s {v = $2} END {printf "%.0f\n", v + 0}' <<<"$BENCH_SCRAPE"
}

# Waits until the agent has caught up: new_connections_total unchanged over 300 ms (at most 5 s).
bench_settle() {
    local previous=-1 current deadline=$((SECONDS + 5))
    while ((SECONDS < deadline)); do
        bench_scrape
        current=$(bench_metric conntrackr_new_connections_total)
        [[ "$current" == "$previous" ]] && return 0
        previous=$current
        sleep 0.3
    done
}

# Median of numbers on stdin.
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print 0; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
