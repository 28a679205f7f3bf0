#!/usr/bin/env bash
# e2e-timeout: 120
# test-pcap-scan.sh over IPv6: `nmap -6 -sS` from the attacker, the client over IPv6.
E2E_FAMILY=6 exec bash "$(dirname "$0")/test-pcap-scan.sh" "$@"
