#!/usr/bin/env bash
# e2e-timeout: 60
# Issue 16, item 5: what a busy host needs, through `conntrackr replay` of the recorded nmap capture (33 SYNs, one
# scan of 198.51.100.56 over ports 20-49, reported as [21, 22, 23, 25]). `--events` writes only the chosen kinds;
# `--ignore-ports` keeps ports out of the scan rule (their SYNs stay new_connection events, are never counted and
# never listed). Needs no namespaces. Usage: test-replay-busy-host.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_cmds python3
bin=$(e2e_binary "$@")
lab_init
capture=$E2E_CAPTURES/nmap-syn-scan-v4.pcap
[[ -s "$capture" ]] || fail "$capture is missing (committed captures come from record-captures.sh)"
dir=$LAB_TMP
attacker=198.51.100.56

replay() { # NAME ARGS...
    local name=$1
    shift
    timeout -k 5 20 "$bin" replay "$capture" --format json "$@" >"$dir/$name.out" 2>"$dir/$name.err" </dev/null ||
        fail "replay $*: status $? ($(head -c 300 "$dir/$name.err"))"
    n=$(events check "$dir/$name.out" 2>&1) || fail "replay $*: malformed output: $n"
}

replay all
assert_eq "$(events count "$dir/all.out" event=new_connection)" 33 "new_connection events of the plain replay"
assert_eq "$(events list "$dir/all.out" ports event=port_scan)" "21,22,23,25" "the plain replay's scan"

# Event selection: only the chosen kinds, in any combination.
replay scans --events port_scan
assert_eq "$(wc -l <"$dir/scans.out")" 1 "lines with --events port_scan"
assert_eq "$(events count "$dir/scans.out" event=port_scan src=$attacker)" 1 "port_scan events with --events port_scan"
replay connections --events new_connection
assert_eq "$(wc -l <"$dir/connections.out")" 33 "lines with --events new_connection"
assert_eq "$(events count "$dir/connections.out" event=new_connection)" 33 "new_connection events with --events new_connection"
replay none --events blocked,unblocked
assert_eq "$(wc -l <"$dir/none.out")" 0 "lines with --events blocked,unblocked (replay blocks nothing)"

# Ignored ports: every SYN is still a new connection, but 21-23 are not counted or listed; ignoring the whole
# range leaves no scan at all.
replay some --ignore-ports 21-23
assert_eq "$(events count "$dir/some.out" event=new_connection)" 33 "new_connection events with --ignore-ports 21-23"
ports=$(events list "$dir/some.out" ports event=port_scan)
assert_ascending "$ports" "the scan's ports with --ignore-ports 21-23"
assert_eq "$(tr ',' '\n' <<<"$ports" | wc -l)" 4 "ports listed in the scan with --ignore-ports 21-23"
assert_eq "$(tr ',' '\n' <<<"$ports" | grep -cxE '2[123]')" 0 "ignored ports listed in the scan"
replay every --ignore-ports 20-49 --ignore-ports 22
assert_eq "$(events count "$dir/every.out" event=new_connection)" 33 "new_connection events with --ignore-ports 20-49"
assert_eq "$(events count "$dir/every.out" event=port_scan)" 0 "port_scan events with --ignore-ports 20-49"

# A bad value is one line naming the item.
rc=0
"$bin" replay "$capture" --ignore-ports 25,70000 >"$dir/bad.out" 2>"$dir/bad.err" || rc=$?
assert_ne "$rc" 0 "exit status with --ignore-ports 25,70000"
assert_file_contains "$dir/bad.err" '"70000" is not a port' "the complaint about --ignore-ports 25,70000"
log "events selected, ignored ports kept out of the scan rule: scan [$ports] with 21-23 ignored"
