# Container image targets (issue 5), included from the top Makefile with `include deploy/image.mk`.
# Uses SWIFT, SWIFT_FLAGS, BIN_RELEASE, SUDO and the deps/test-deps targets defined there.
#
#   make image            the runtime image $(IMAGE): release binary (Swift stdlib static) on bookworm-slim
#   make base-image       $(LOCAL_BASE_IMAGE) made with debootstrap; `image` falls back to it by itself when
#                         $(BASE_IMAGE) cannot be pulled
#   make container-test   builds the image and runs Tests/e2e/test-container.sh (skipped when no engine works)
#   make manifest-test    validates deploy/ (Kubernetes manifests, configuration, systemd unit); no cluster needed
#
# The engine is docker when a docker engine answers `docker info`, else podman, else buildah
# (CONTAINER_ENGINE=... forces one). See deploy/container.sh for CONTAINER_RUNTIME and CONTAINER_ULIMITS.

IMAGE ?= localhost/conntrackr:latest
BASE_IMAGE ?= debian:bookworm-slim
LOCAL_BASE_IMAGE ?= localhost/debian:bookworm-slim
BASE_SUITE ?= bookworm
# Empty: the Debian mirror apt uses on this machine.
BASE_MIRROR ?=
# What a machine without a docker engine needs for the image and its test.
CONTAINER_PACKAGES := podman runc debootstrap python3-yaml
export BASE_IMAGE LOCAL_BASE_IMAGE

.PHONY: image image-binary base-image container-deps container-test manifest-test

# The binary for the image: the Swift standard library linked in, so the image needs no Swift runtime.
image-binary: release

image: image-binary
	deploy/container.sh build $(BIN_RELEASE) $(IMAGE)

base-image:
	@engine=$$(deploy/container.sh engine) || exit 1; \
	deploy/make-base-image.sh "$$engine" $(LOCAL_BASE_IMAGE) $(BASE_SUITE) $(BASE_MIRROR)

# Installs podman, runc and debootstrap unless a docker engine answers (then only debootstrap and PyYAML).
container-deps:
	@pkgs="$(CONTAINER_PACKAGES)"; \
	if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then pkgs="debootstrap python3-yaml"; fi; \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

# Skipped with the reason when no engine works here; otherwise a failure to build the image is a failure.
container-test: test-deps container-deps
	@if ! reason=$$(deploy/container.sh engine 2>&1 >/dev/null); then \
	  echo "SKIP container-test: $$reason"; exit 0; fi; \
	$(MAKE) --no-print-directory image && \
	CONTAINER_IMAGE=$(IMAGE) Tests/e2e/run-all.sh $(BIN_RELEASE) test-container

manifest-test: container-deps release
	Tests/e2e/test-manifests.sh $(BIN_RELEASE)
