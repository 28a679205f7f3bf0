# Alerting rules and dashboard (operator experience), included from the top Makefile; `make test` runs rules-check.
#
#   make rules-check   promtool checks deploy/prometheus/conntrackr-rules.yml and runs its unit tests
#                      (conntrackr-rules.test.yml: every alert firing, and quiet cases), and parses every query
#                      of the Grafana dashboard (as recording rules, Grafana's variables replaced). A few
#                      seconds, no root, no build. promtool comes with Debian's `prometheus` package (in
#                      TEST_PACKAGES, so `make test-deps` installs it).
# That the rules and the dashboard use only metrics the agent exports is checked against a running agent by
# Tests/e2e/test-dashboard-metrics.sh (part of `make e2e`).

PROMTOOL ?= promtool
PROMETHEUS_RULES := deploy/prometheus/conntrackr-rules.yml
PROMETHEUS_RULE_TESTS := deploy/prometheus/conntrackr-rules.test.yml
GRAFANA_DASHBOARD := deploy/grafana/conntrackr-dashboard.json

.PHONY: rules-check

rules-check:
	@command -v $(PROMTOOL) >/dev/null || { echo "error: $(PROMTOOL) not found (make test-deps, or apt-get install prometheus)"; exit 1; }
	$(PROMTOOL) check rules $(PROMETHEUS_RULES)
	$(PROMTOOL) test rules $(PROMETHEUS_RULE_TESTS)
	@mkdir -p .build
	python3 Tests/e2e/tools/monitoring_queries.py dashboard-rules . > .build/dashboard-queries.rules.yml
	$(PROMTOOL) check rules .build/dashboard-queries.rules.yml
