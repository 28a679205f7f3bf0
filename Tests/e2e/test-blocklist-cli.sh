#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 3: `conntrackr blocklist list|add|remove|flush` edits the pinned maps while the agent runs: a manual block
# drops the client in XDP and shows its drop counter, removing it lets the client in again, an allowlisted prefix
# and a bad prefix are refused with one line, and flush empties the list. Usage: test-blocklist-cli.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds python3
bin=$(e2e_binary "$@")

lab_up
xdp_init
lab_listen victim 443
xdp_agent_start agent "$bin" --block xdp --allow "$LAB_ATTACKER_IP4"
agent=$XDP_AGENT
cli() { nsenter --net="/run/netns/$LAB_NS_VICTIM" -- "$bin" blocklist "$@" --pin-dir "$XDP_PINS"; }

assert_match "$(cli list)" '^0 blocked, 0 packets dropped$' "an empty blocklist at start"
assert_eq "$(cli add "$LAB_CLIENT_IP4" --ttl 120)" "blocked $LAB_CLIENT_IP4/32 for 120 s" "add"
lab_connect client --timeout 2 --expect-timeout "$LAB_VICTIM_IP4" 443
listing=$(cli list)
assert_match "$listing" "^$LAB_CLIENT_IP4/32  manual  local  until [0-9-]+ [0-9:]+  [1-9][0-9]* packets dropped" \
    "the client's entry with a drop counter"
json=$(cli list --format json)
assert_match "$json" "\"src\":\"$LAB_CLIENT_IP4/32\",\"reason\":\"manual\"" "JSON listing"

# Refusals: one line on stderr, non-zero status.
if err=$(cli add "$LAB_ATTACKER_IP4" 2>&1); then fail "an allowlisted address was blocked"; fi
assert_match "$err" "overlaps the allowlisted" "allowlisted refusal"
assert_eq "$(wc -l <<<"$err")" 1 "one line for the allowlisted refusal"
if err=$(cli add 203.0.113.300 2>&1); then fail "a bad prefix was accepted"; fi
assert_match "$err" "is not an address or CIDR prefix" "bad prefix refusal"

assert_eq "$(cli remove "$LAB_CLIENT_IP4")" "unblocked $LAB_CLIENT_IP4/32" "remove"
lab_connect client "$LAB_VICTIM_IP4" 443
if cli remove "$LAB_CLIENT_IP4" 2>/dev/null; then fail "removing an absent block succeeded"; fi

cli add 198.51.100.128/25 --ttl 0 >/dev/null
assert_match "$(cli list)" "198.51.100.128/25  manual  local  permanent" "a permanent prefix block"
assert_eq "$(cli flush)" "unblocked 1 prefixes" "flush"
assert_match "$(cli list)" '^0 blocked' "empty after flush"

xdp_agent_stop "$agent" agent
log "blocklist CLI: add, list with counters, refusals, remove, flush"
