#!/usr/bin/env bash
# e2e-timeout: 170
# test-nft-block.sh over IPv6: the scans and connections over IPv6, single addresses blocked.
E2E_FAMILY=6 exec bash "$(dirname "$0")/test-nft-block.sh" "$@"
