# Fuzzing (issue 7), for the top-level Makefile: `include Tests/Fuzz/fuzz.mk`, and `$(MAKE) fuzz-smoke` in `test`.
#   make fuzz          every fuzz target for FUZZ_SECONDS each (default 180) from the committed seed corpus
#   make fuzz-smoke    the same for FUZZ_SMOKE_SECONDS each (default 30): what CI runs
#   make fuzz-seeds    regenerate Tests/Fuzz/Corpus from the frame builders and the committed captures
FUZZ_SECONDS ?= 180
FUZZ_SMOKE_SECONDS ?= 30

.PHONY: fuzz fuzz-smoke fuzz-seeds

fuzz: deps
	SWIFT=$(SWIFT) FUZZ_SECONDS=$(FUZZ_SECONDS) Tests/Fuzz/run-fuzz.sh

fuzz-smoke: deps
	SWIFT=$(SWIFT) FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) Tests/Fuzz/run-fuzz.sh

fuzz-seeds: deps
	$(SWIFT) build --product FuzzSeeds $(SWIFT_FLAGS)
	$$($(SWIFT) build --show-bin-path $(SWIFT_FLAGS))/FuzzSeeds Tests/Fuzz/Corpus Tests/ConnCaptureTests/Captures
