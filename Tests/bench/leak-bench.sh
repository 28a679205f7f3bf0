#!/usr/bin/env bash
# make bench, issue 12: what a scanner learns before it is blocked, per scanner and per way of blocking. The
# victim's distinct answering ports (SYN-ACK or RST) are counted on the scanner's side (LAB-NOTES), in the e2e lab,
# against a fresh agent each time at default settings (more than 3 ports within 60 s):
#   kernel:   run --source xdp --block xdp (the rule enforced in the XDP program, the default)
#   user:     run --source xdp --block xdp --no-kernel-enforcement (the rule in user space, the block a map write)
#   nftables: run --source pcap --block nftables (the table's scan guard holds the pair, the default)
#   nftables-user: run --source pcap --block nftables --no-kernel-enforcement (only the agent's block stops it)
# Scanners: hping3 at 1 SYN/ms to the next port, nmap -sS -T4 over 1000 ports, nmap -6 from the victim's own /64,
# masscan at 100k packets/s (lib-xdp.sh, leak_scan). Prints a Markdown table of the median and range of
# LEAK_RUNS runs (3). Settings: LEAK_MODES ("kernel user nftables nftables-user"), LEAK_SCANNERS ("hping3 nmap nmap6 masscan").
# Usage: Tests/bench/leak-bench.sh BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib.sh"
. "$here/../e2e/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap hping3 masscan tcpdump nft python3
bin=$(e2e_binary "$@")
runs=${LEAK_RUNS:-3}
modes=${LEAK_MODES:-kernel user nftables nftables-user}
scanners=${LEAK_SCANNERS:-hping3 nmap nmap6 masscan}
mkdir -p "$E2E_REPO/bench-out"
results=$E2E_REPO/bench-out/leak-bench.tsv
: >"$results"

lab_up
xdp_init
lab_listen victim 22 80 443
lab_register_nft_table inet conntrackr "$LAB_NS_VICTIM" # removed by the agent on exit, by the cleanup otherwise

agent_start() { # MODE NAME
    case $1 in
        kernel) xdp_agent_start "$2" "$bin" --block xdp ;;
        user) xdp_agent_start "$2" "$bin" --block xdp --no-kernel-enforcement ;;
        nftables | nftables-user)
            local flags=()
            [[ $1 == nftables ]] || flags=(--no-kernel-enforcement)
            xdp_spawn_in_victim "$2" "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --block nftables \
                --format json --metrics-address none "${flags[@]}"
            XDP_AGENT=$LAB_LAST_PID
            lab_wait_capture_started "$2" "$XDP_AGENT" 15 ;;
    esac
}

for rep in $(seq "$runs"); do
    for scanner in $scanners; do
        for mode in $modes; do # alternated, so that all see the same machine
            name=$mode-$scanner-$rep
            agent_start "$mode" "$name"
            leak_capture_start "$name"
            leak_scan "$scanner" "$name"
            learned=$(leak_capture_ports)
            printf '%s\t%s\t%s\t%s\n' "$mode" "$scanner" "$rep" "$learned" >>"$results"
            log "$mode $scanner run $rep: $learned ports answered"
            lab_stop "$XDP_AGENT" INT 8
            [[ $mode == nftables* ]] || "$bin" blocklist flush --pin-dir "$XDP_PINS" >/dev/null
        done
    done
done

python3 - "$results" "$runs" <<'PY'
import collections, statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
got = collections.defaultdict(list)
for mode, scanner, _, learned in rows:
    got[(scanner, mode)].append(int(learned))
names = {"hping3": "hping3 -S, 1 SYN/ms, next port each time", "nmap": "nmap -sS -T4, ports 1-1000",
         "nmap6": "nmap -6 -sS -T4, ports 1-1000, from the victim's /64", "masscan": "masscan, 100k packets/s, ports 1-1000"}
modes = [m for m in ("kernel", "user", "nftables", "nftables-user") if any(k[1] == m for k in got)]
heads = {"kernel": "XDP, kernel enforcement", "user": "XDP, user-space detection",
         "nftables": "pcap + nftables, scan guard", "nftables-user": "pcap + nftables, user-space detection"}
print(f"\n### Ports a scanner learns before the block (default rule: more than 3 ports in 60 s; median [range] of {sys.argv[2]} runs)\n")
print("| scanner | " + " | ".join(heads[m] for m in modes) + " |")
print("|---|" + "---|" * len(modes))
for scanner in names:
    if not any(k[0] == scanner for k in got):
        continue
    cells = []
    for m in modes:
        v = got.get((scanner, m), [])
        cells.append(f"{statistics.median(v):.0f} [{min(v)}-{max(v)}]" if v else "-")
    print(f"| {names[scanner]} | " + " | ".join(cells) + " |")
PY
