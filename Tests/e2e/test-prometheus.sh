#!/usr/bin/env bash
# Issue 4: a real Prometheus server scrapes the agent every second; its query API returns the number of connection
# attempts the lab made, and the scan counter moves after an nmap scan.
# e2e-timeout: 150
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap prometheus curl
bin=$(e2e_binary "$@")
lab_up
lab_listen victim 22 80 443

metrics_port=19542
prometheus_port=19090
lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --format json \
    --metrics-address "127.0.0.1:$metrics_port"
agent=$LAB_LAST_PID
lab_wait_capture_started agent "$agent"

# Prometheus runs in the victim's namespace, so it reaches the agent's loopback-only endpoint.
cat >"$LAB_TMP/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: conntrackr
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
mkdir -p "$LAB_TMP/tsdb"
lab_spawn victim prometheus prometheus --config.file="$LAB_TMP/prometheus.yml" \
    --storage.tsdb.path="$LAB_TMP/tsdb" --web.listen-address="127.0.0.1:$prometheus_port"
wait_for_line "$LAB_TMP/prometheus.err" 'Server is ready to receive web requests' 30 ||
    fail "prometheus did not start: $(tail -n 5 "$LAB_TMP/prometheus.err")"

# The value Prometheus holds for an instant query, or "none".
query() {
    lab_exec victim 5 curl -sf "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
# Waits until the query returns EXPECTED (compared as numbers); prints the last value.
wait_for_value() { # QUERY EXPECTED TIMEOUT
    local deadline=$((SECONDS + $3)) value=none
    while ((SECONDS <= deadline)); do
        value=$(query "$1" || echo none)
        [[ "$value" != none ]] && python3 -c "import sys; sys.exit(0 if float('$value') == float('$2') else 1)" && break
        sleep 0.5
    done
    echo "$value"
}

# A known number of attempts: two rounds of the client's three ports, each from a new source port.
lab_connect client "$LAB_VICTIM_IP4" 22 80 443
lab_connect client "$LAB_VICTIM_IP4" 22 80 443
value=$(wait_for_value 'conntrackr_new_connections_total{job="conntrackr"}' 6 20)
assert_eq "$value" 6 "conntrackr_new_connections_total in Prometheus after 6 attempts"
assert_eq "$(query 'conntrackr_port_scans_total')" 0 "scans before the nmap scan"
assert_eq "$(query 'conntrackr_capture_running')" 1 "capture running gauge"
assert_eq "$(query 'up{job="conntrackr"}')" 1 "scrape target up"

lab_exec attacker 60 nmap -n -Pn -sS -p 20-60 --max-retries 1 "$LAB_VICTIM_IP4" >/dev/null
value=$(wait_for_value 'conntrackr_port_scans_total' 1 20)
assert_eq "$value" 1 "conntrackr_port_scans_total after an nmap scan"
scanned=$(events count "$LAB_TMP/agent.out" event=new_connection src="$LAB_ATTACKER_IP4")
value=$(wait_for_value 'conntrackr_new_connections_total' $((6 + scanned)) 10)
assert_eq "$value" $((6 + scanned)) "the counter matches the new_connection events"

lab_stop "$agent" TERM 5
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status after SIGTERM"
assert_eq "$LAB_STOP_TIMELY" 1 "agent stopped within 5 s"
echo "prometheus saw $value connection attempts and the scan"
