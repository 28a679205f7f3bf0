#!/usr/bin/env bash
# Operator experience: the alerting rules (deploy/prometheus/conntrackr-rules.yml) and the Grafana dashboard
# (deploy/grafana/conntrackr-dashboard.json) query only what a running agent exports. The agent runs in the lab's
# victim with its metrics on the victim's lab address; its /metrics is scraped with curl from inside the victim,
# and every conntrackr_* name in the rules' and the dashboard's expressions must be in it, with the label values
# their matchers name (tools/monitoring_queries.py). The checker itself must catch a renamed metric and a misspelt
# label value in broken copies of the files.
# e2e-timeout: 60
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds curl python3
python3 -c 'import yaml' 2>/dev/null || skip "PyYAML is missing (apt-get install python3-yaml)"
bin=$(e2e_binary "$@")
checker=$E2E_TOOLS/monitoring_queries.py
lab_up
lab_listen victim 22 80 443

metrics_port=19542
metrics_url="http://$LAB_VICTIM_IP4:$metrics_port/metrics"
# Blocking on (nftables inside the victim's namespace, removed at exit), so the blocker's series are the ones a
# blocking deployment exports.
lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --format json --block nftables \
    --metrics-address "$LAB_VICTIM_IP4:$metrics_port"
agent=$LAB_LAST_PID
lab_wait_capture_started agent "$agent"
# One attempt on each of three ports, so the scrape comes from an agent that has seen traffic.
lab_connect client "$LAB_VICTIM_IP4" 22 80 443

scrape() { lab_exec victim 5 curl -sf -o "$LAB_TMP/metrics.txt" "$metrics_url"; }
wait_for 10 scrape || fail "no answer from $metrics_url inside the victim: $(tail -n 5 "$LAB_TMP/agent.err")"
exported=$(grep -cE '^conntrackr_[a-z_]+' "$LAB_TMP/metrics.txt" || true)
assert_int "$exported" -ge 15 "conntrackr_* samples in the agent's /metrics"
log "the agent exports $exported conntrackr_* samples"

# The names the rules and the dashboard use: the extraction must find the rules' and the dashboard's.
python3 "$checker" names "$E2E_REPO" >"$LAB_TMP/used.txt"
assert_int "$(wc -l <"$LAB_TMP/used.txt")" -ge 10 "conntrackr_* names found in the rules and the dashboard"
for name in conntrackr_port_scans_total conntrackr_blocks_refused_total conntrackr_capture_running \
    conntrackr_build_info conntrackr_blocked_sources; do
    grep -qx "$name" "$LAB_TMP/used.txt" || fail "the extraction missed $name, which the rules and the dashboard use"
done

if ! out=$(python3 "$checker" check "$E2E_REPO" "$LAB_TMP/metrics.txt" 2>&1); then
    log "$out"
    fail "$(grep '^MISSING: ' <<<"$out" | sed 's/^MISSING: //' | head -n 5 | paste -sd ';' -)"
fi
log "$out"

# The checker catches what it is for: broken copies of the files must fail, naming the broken query.
mutant() { # SED-SCRIPT FILE EXPECTED-OUTPUT
    rm -rf "$LAB_TMP/repo"
    mkdir -p "$LAB_TMP/repo"
    cp -r "$E2E_REPO/deploy" "$LAB_TMP/repo/"
    sed -i -e "$1" "$LAB_TMP/repo/$2"
    cmp -s "$LAB_TMP/repo/$2" "$E2E_REPO/$2" && fail "mutation '$1' did not change $2"
    local got
    got=$(python3 "$checker" check "$LAB_TMP/repo" "$LAB_TMP/metrics.txt" 2>&1) &&
        fail "the checker accepted $2 after '$1'"
    grep -qF -- "$3" <<<"$got" || fail "after '$1' in $2 the checker said: $got (expected: $3)"
}
mutant 's/conntrackr_tracked_pairs{/conntrackr_tracked_pair{/' deploy/grafana/conntrackr-dashboard.json \
    "conntrackr_tracked_pair is not exported"
mutant 's/reason!="allowlisted"/reason!="allowlistd"/' \
    deploy/prometheus/conntrackr-rules.yml 'ConntrackrScannersNotBlocked: conntrackr_blocks_refused_total{reason!="allowlistd"}'
mutant 's/conntrackr_capture_running == 0/conntrackr_capture_runs == 0/' deploy/prometheus/conntrackr-rules.yml \
    "ConntrackrCaptureNotRunning: conntrackr_capture_runs is not exported"
mutant 's/sum by (origin)/sum by (orgin)/' deploy/grafana/conntrackr-dashboard.json "grouping by 'orgin'"
log "the checker refused each of 4 broken copies"

lab_stop "$agent" TERM 5
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status after SIGTERM"
echo "$(wc -l <"$LAB_TMP/used.txt") metric names used by the rules and the dashboard, all exported"
