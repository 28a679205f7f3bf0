# Alerting rules and dashboard (operator experience), included from the top Makefile; `make test` runs rules-check.
#
#   make rules-check   promtool checks deploy/prometheus/conntrackr-rules.yml and runs its unit tests
#                      (conntrackr-rules.test.yml: every alert firing, and quiet cases). A few seconds, no root,
#                      no build. promtool comes with Debian's `prometheus` package (in TEST_PACKAGES, so
#                      `make test-deps` installs it).

PROMTOOL ?= promtool
PROMETHEUS_RULES := deploy/prometheus/conntrackr-rules.yml
PROMETHEUS_RULE_TESTS := deploy/prometheus/conntrackr-rules.test.yml

.PHONY: rules-check

rules-check:
	@command -v $(PROMTOOL) >/dev/null || { echo "error: $(PROMTOOL) not found (make test-deps, or apt-get install prometheus)"; exit 1; }
	$(PROMTOOL) check rules $(PROMETHEUS_RULES)
	$(PROMTOOL) test rules $(PROMETHEUS_RULE_TESTS)
