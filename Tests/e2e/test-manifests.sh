#!/usr/bin/env bash
# e2e-timeout: 60
# Issue 5: the deployment files are valid without a cluster. tools/check_manifests.py checks the DaemonSet (host
# network, exactly the four capabilities, nothing privileged, the host's bpffs, the configuration mount, liveness
# on /healthz at the metrics port, scrape annotations, resources, tolerations, rollout), the ConfigMap (parses,
# equals deploy/conntrackr.yaml), the systemd unit's hardening and the Containerfile. Then the binary itself must
# accept deploy/conntrackr.yaml (each key a flag of `conntrackr run`, each value valid), and systemd must accept
# the unit (`systemd-analyze verify`, and `security` exposure at most 3.0) when systemd-analyze is installed.
# Usage: test-manifests.sh BINARY (also `make manifest-test`)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_cmds python3
python3 -c 'import yaml' 2>/dev/null || skip "PyYAML is missing (apt-get install python3-yaml)"
bin=$(e2e_binary "$@")
config=$E2E_REPO/deploy/conntrackr.yaml
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctr-manifests.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

# The long options of `conntrackr run`, the only keys a configuration file may use.
"$bin" run --help 2>&1 | grep -oE -- '--[a-z][a-z0-9-]+' | sed 's/^--//; s/^no-//' | sort -u >"$tmp/flags"
assert_int "$(wc -l <"$tmp/flags")" -ge 10 "options found in 'conntrackr run --help'"
out=$(python3 "$E2E_TOOLS/check_manifests.py" "$E2E_REPO" --flags "$tmp/flags" 2>&1) || {
    log "$out"
    fail "$(grep -m1 '^FAIL: ' <<<"$out" | sed 's/^FAIL: //')"
}
log "$out"

# The checker catches what it is for: each mutation of a copy of the files must fail with the expected reason.
mutant() { # SED-SCRIPT FILE EXPECTED-FAILURE
    rm -rf "$tmp/repo"
    mkdir -p "$tmp/repo"
    cp -r "$E2E_REPO/deploy" "$E2E_REPO/Containerfile" "$tmp/repo/"
    sed -i -e "$1" "$tmp/repo/$2"
    cmp -s "$tmp/repo/$2" "$E2E_REPO/$2" && fail "mutation '$1' did not change $2"
    local got
    got=$(python3 "$E2E_TOOLS/check_manifests.py" "$tmp/repo" --flags "$tmp/flags" 2>&1) &&
        fail "the checker accepted $2 after '$1'"
    grep -qF -- "$3" <<<"$got" || fail "after '$1' in $2 the checker said: $got (expected: $3)"
}
ds=deploy/kubernetes/daemonset.yaml
mutant 's/add: \[NET_ADMIN, NET_RAW, BPF, PERFMON\]/add: [NET_ADMIN, NET_RAW, BPF, PERFMON, SYS_ADMIN]/' $ds \
    "adds SYS_ADMIN"
mutant 's/privileged: false/privileged: true/' $ds "is privileged"
mutant 's/hostNetwork: true/hostNetwork: false/' $ds "hostNetwork is not true"
mutant 's#path: /healthz#path: /metrics#' $ds "livenessProbe is not httpGet /healthz"
mutant 's#mountPath: /run/conntrackr/bpf#mountPath: /bpf#' $ds "is not a mounted volume"
mutant 's#path: /sys/fs/bpf/conntrackr#path: /sys/fs/bpf#' $ds "the host's whole /sys/fs/bpf is mounted"
mutant 's#prometheus.io/scrape: "true"#prometheus.io/scrape: "false"#' $ds "prometheus.io/scrape"
mutant '/memory: 512Mi/d' $ds "resources.limits.memory"
mutant 's/--metrics-address=\[$(NODE_IP)\]:9542/--metrics-address=127.0.0.1:9542/' $ds "metrics bound to loopback"
mutant 's/--metrics-address=\[$(NODE_IP)\]:9542/--metrics-address=$(NODE_IP):9542/' $ds "an IPv6 node address would not parse"
mutant 's/block-ttl: 3600/block-ttl: 60/' deploy/kubernetes/configmap.yaml "differs from deploy/conntrackr.yaml"
mutant 's/^    scan-ports: 3/   scan-ports: [3/' deploy/kubernetes/configmap.yaml "cannot read the deployment files"
mutant 's/^CapabilityBoundingSet=.*/&  CAP_SYS_ADMIN/' deploy/systemd/conntrackr.service "CapabilityBoundingSet"
mutant '/^ProtectSystem=/d' deploy/systemd/conntrackr.service "ProtectSystem"
mutant '/^BindPaths=/d' deploy/systemd/conntrackr.service "is not bound from /sys/fs/bpf"
mutant 's#^BindPaths=/sys/fs/bpf/conntrackr:#BindPaths=/sys/fs/bpf:#' deploy/systemd/conntrackr.service "the whole /sys/fs/bpf is bound"
mutant 's/^block: xdp/&\nblock-after: 5/' deploy/conntrackr.yaml "'block-after' is not a flag of conntrackr run"
log "the checker refused each of 14 broken copies"

# The binary parses the configuration: it gets past the settings and stops at the (absent) interface, never at
# the file. Configuration errors name the file or the setting, as the two broken
# copies show (so this check can tell the difference).
config_error='unknown setting|must be|is not (valid YAML|an address)|cannot read configuration'
# The file's source and block are parsed and validated before the flags override them; the flags keep the agent
# away from the kernel (no XDP program, no pins on the host's bpffs, no nftables table).
accepts() { # FILE: prints the agent's one-line error
    timeout 10 "$bin" run --config "$1" --source pcap --block none --metrics-address none --log-level error \
        --interface "ctr-none-$$" 2>&1 >/dev/null || true
}
err=$(accepts "$config")
[[ -n "$err" ]] || fail "conntrackr run with a missing interface printed no error"
if [[ "$err" == *"$config"* ]] || grep -qE "$config_error" <<<"$err"; then
    fail "conntrackr rejects deploy/conntrackr.yaml: $err"
fi
log "deploy/conntrackr.yaml accepted (the agent stopped at: $err)"
sed 's/^scan-ports: .*/scan-ports: many/' "$config" >"$tmp/bad-type.yaml"
sed 's/^allow: .*/allow: [not-an-address]/' "$config" >"$tmp/bad-allow.yaml"
for broken in "$tmp/bad-type.yaml" "$tmp/bad-allow.yaml"; do
    err=$(accepts "$broken")
    grep -qE "$config_error" <<<"$err" || fail "a broken configuration ($(basename "$broken")) was not refused: $err"
done

# systemd's own checks of the unit, with ExecStart pointed at the binary under test (verify wants it to exist).
if command -v systemd-analyze >/dev/null 2>&1; then
    sed "s#/usr/local/bin/conntrackr#$bin#" "$E2E_REPO/deploy/systemd/conntrackr.service" >"$tmp/conntrackr.service"
    out=$(cd "$tmp" && timeout 30 systemd-analyze verify "$tmp/conntrackr.service" 2>&1) ||
        fail "systemd-analyze verify: $out"
    [[ -z "$out" ]] || fail "systemd-analyze verify warns: $out"
    if security=$(timeout 30 systemd-analyze security --offline=true "$tmp/conntrackr.service" 2>/dev/null); then
        exposure=$(grep -oE 'Overall exposure level for [^:]+: [0-9.]+' <<<"$security" | awk '{print $NF}')
        [[ -n "$exposure" ]] || fail "no exposure level in systemd-analyze security's output"
        awk -v e="$exposure" 'BEGIN { exit !(e <= 3.0) }' ||
            fail "systemd-analyze security rates the unit $exposure (more exposed than 3.0)"
        log "systemd-analyze: verify clean, exposure $exposure"
    else
        log "systemd-analyze: verify clean (this systemd has no offline security analysis)"
    fi
else
    log "systemd-analyze is not installed: the unit was checked by check_manifests.py only"
fi
