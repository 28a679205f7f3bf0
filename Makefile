# conntrackr: `make run` monitors this host, `make test` runs everything. Both install what they need.
SHELL := /bin/bash
SWIFT ?= swift
SWIFT_FLAGS ?=
BIN_DEBUG := .build/debug/conntrackr
BIN_RELEASE := .build/release/conntrackr
# Debian packages the build and the tests need (installed when missing).
BUILD_PACKAGES := libpcap-dev libnftables-dev libnftnl-dev libmnl-dev libbpf-dev libelf-dev zlib1g-dev libzstd-dev clang-14 llvm-14 bpftool pkg-config time
TEST_PACKAGES := iproute2 nmap hping3 masscan tcpdump zstd netsniff-ng nftables prometheus etcd-server etcd-client openssl python3 python3-yaml ethtool curl xdp-tools
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all deps test-deps build release run test unit e2e bench lint clean

include bpf/bpf.mk
include deploy/image.mk
include Tests/Fuzz/fuzz.mk
include deploy/prometheus/rules.mk

all: build

deps:
	@missing=$$(for p in $(BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@command -v $(SWIFT) >/dev/null || { echo "error: no Swift toolchain on PATH (need Swift 6.2 or later)"; exit 1; }

# Debian starts the services of etcd-server and prometheus on install, listening on the host. The tests start their
# own inside namespaces: a policy-rc.d that refuses every start (exit 101) is in place during the install only
# (removed, or the one it replaced put back, on any exit), and a service an earlier install started is stopped and
# disabled.
TEST_SERVICES := etcd prometheus prometheus-node-exporter
test-deps: deps
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  saved=; if [ -e /usr/sbin/policy-rc.d ]; then saved=/usr/sbin/policy-rc.d.conntrackr-saved; \
	    $(SUDO) mv -f /usr/sbin/policy-rc.d $$saved || exit 1; fi; \
	  trap 'if [ -n "$$saved" ]; then $(SUDO) mv -f $$saved /usr/sbin/policy-rc.d; else $(SUDO) rm -f /usr/sbin/policy-rc.d; fi' EXIT; \
	  printf '#!/bin/sh\n# conntrackr make test-deps: no service starts during the install\nexit 101\n' \
	    | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && $(SUDO) chmod 755 /usr/sbin/policy-rc.d || exit 1; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null \
	    || exit 1; fi
	@for service in $(TEST_SERVICES); do \
	  if command -v systemctl >/dev/null && systemctl is-active --quiet $$service 2>/dev/null; then \
	    echo "stopping the $$service service (the tests run their own)"; $(SUDO) systemctl disable --now $$service; \
	  elif [ -x /etc/init.d/$$service ] && $(SUDO) /etc/init.d/$$service status >/dev/null 2>&1; then \
	    echo "stopping the $$service service (the tests run their own)"; $(SUDO) /etc/init.d/$$service stop; \
	    $(SUDO) update-rc.d $$service disable >/dev/null 2>&1 || true; \
	  fi; \
	done

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# One release build serves `run`, the end-to-end tests and the container image: the agent with the Swift
# standard library linked in (no Swift runtime needed where it runs).
RELEASE_FLAGS := -c release --static-swift-stdlib
release: deps
	$(SWIFT) build $(RELEASE_FLAGS) --product conntrackr $(SWIFT_FLAGS)

# Monitors this host's default interface (needs root, or CAP_NET_RAW and CAP_NET_ADMIN for pcap).
run: release
	$(SUDO) $(BIN_RELEASE) run $(ARGS)

unit: deps
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT) test --skip-build $(SWIFT_FLAGS)

e2e: test-deps release
	Tests/e2e/run-all.sh $(BIN_RELEASE)

# Everything CI runs: the committed BPF skeleton matches its source, the alerting rules' tests, unit tests,
# end-to-end tests in the lab.
test: test-deps
	$(MAKE) bpf-check
	$(MAKE) rules-check
	$(MAKE) unit
	$(MAKE) fuzz-smoke
	$(MAKE) e2e
	$(MAKE) container-test

# Speed and memory goals are checked here, never as timed assertions in tests. Each part prints Markdown tables.
bench: test-deps release
	$(SWIFT) build $(RELEASE_FLAGS) --product conntrackr-synth $(SWIFT_FLAGS)
	Tests/bench/run-bench.sh $(BIN_RELEASE)
	Tests/bench/xdp-bench.sh $(BIN_RELEASE)
	Tests/bench/flood-bench.sh $(BIN_RELEASE)
	Tests/bench/leak-bench.sh $(BIN_RELEASE)

clean:
	rm -rf .build .build-fuzz bench-out
