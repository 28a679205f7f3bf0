#!/usr/bin/env bash
# e2e-timeout: 180
# test-xdp-block.sh over IPv6. Usage: test-xdp-block-v6.sh BINARY
E2E_FAMILY=6 exec bash "$(dirname "$0")/test-xdp-block.sh" "$@"
