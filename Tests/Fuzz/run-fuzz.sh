#!/usr/bin/env bash
# Runs the libFuzzer targets, each for a bounded time, from a copy of the committed seed corpus plus the committed
# crash regressions. Exits non-zero when a target crashes, leaks, times out or breaks a property; the input that
# did it is kept in $FUZZ_OUT/<target>/ and printed in hex.
#
#   Tests/Fuzz/run-fuzz.sh [TARGET...]        (default: every target)
#
#   FUZZ_SECONDS   seconds per target (default 180)
#   FUZZ_OUT       where corpora, artifacts and logs go (default .build-fuzz/out)
#   SWIFT          the swift driver (default swift)
#
# The targets are built with libFuzzer and AddressSanitizer into their own scratch path (.build-fuzz), so normal
# builds are not disturbed. The form is the one STYLE.md gives: `--sanitize=fuzzer` plus
# `-Xswiftc -sanitize=fuzzer,address` (`-Xswiftc -sanitize=fuzzer` alone builds a binary that never fuzzes).
set -euo pipefail

cd "$(dirname "$0")/../.."
SWIFT=${SWIFT:-swift}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-180}
OUT=${FUZZ_OUT:-.build-fuzz/out}
ALL_TARGETS=(FuzzFrameParser FuzzPipeline FuzzAllowlist)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")

case $SECONDS_PER_TARGET in
    '' | *[!0-9]*) echo "run-fuzz: FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac
for target in "${TARGETS[@]}"; do
    [ -d "Tests/Fuzz/Corpus/$target" ] || { echo "run-fuzz: unknown target $target (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

failed=()
summary=()
for target in "${TARGETS[@]}"; do
    echo "== $target: building"
    "$SWIFT" build -c debug --product "$target" --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address \
        --scratch-path .build-fuzz 2>&1 | grep -Ev "warning: Cannot export local symbol|^\[[0-9]+/[0-9]+\]" || true
    binary=.build-fuzz/debug/$target
    [ -x "$binary" ] || { echo "run-fuzz: $binary was not built" >&2; exit 1; }

    work=$OUT/$target
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp Tests/Fuzz/Corpus/"$target"/* "$work/corpus/"
    if [ -d "Tests/Fuzz/Regressions/$target" ]; then cp Tests/Fuzz/Regressions/"$target"/* "$work/corpus/"; fi
    options=(-max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1
             -artifact_prefix="$work/artifacts/")
    if [ -f "Tests/Fuzz/$target.dict" ]; then options+=(-dict="Tests/Fuzz/$target.dict"); fi

    echo "== $target: fuzzing for ${SECONDS_PER_TARGET}s (log: $work/fuzz.log)"
    status=0
    # libFuzzer stops itself after max_total_time; the outer timeout only catches a hang of the whole process.
    SWIFT_BACKTRACE=enable=no timeout --kill-after=10 $((SECONDS_PER_TARGET + 120)) \
        "$binary" "${options[@]}" "$work/corpus" >"$work/fuzz.log" 2>&1 || status=$?
    done_line=$(grep -aE '^#[0-9]+[[:space:]]+DONE' "$work/fuzz.log" | tail -1 || true)
    [ -n "$done_line" ] || done_line=$(grep -aE '^#[0-9]+[[:space:]]' "$work/fuzz.log" | tail -1 || true)
    execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")
    cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p' <<<"$done_line")
    summary+=("$target: ${runs:-?} runs, ${execs:-?} exec/s, ${cov:-no coverage line}, exit $status")

    artifacts=("$work"/artifacts/*)
    if [ "$status" -ne 0 ] || [ -e "${artifacts[0]}" ]; then
        failed+=("$target")
        echo "== $target: FAILED (exit $status)"
        grep -aE "ERROR: |fuzz property violated|Fatal error|SUMMARY" "$work/fuzz.log" | head -20 || true
        for artifact in "${artifacts[@]}"; do
            [ -e "$artifact" ] || continue
            echo "   input kept: $artifact"
            echo "   hex: $(od -An -v -tx1 "$artifact" | tr -d ' \n' | head -c 2000)"
        done
        echo "   to reproduce: SWIFT_BACKTRACE=enable=no $binary ${artifacts[0]}"
    fi
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "run-fuzz: ${failed[*]} failed; commit each kept input under Tests/Fuzz/Regressions/<target>/ with a test" >&2
    exit 1
fi
