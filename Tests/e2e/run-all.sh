#!/usr/bin/env bash
# Runs every Tests/e2e/test-*.sh against a conntrackr binary, each in its own process under a time limit, and
# prints PASS/FAIL/SKIP per test with the reason, then exactly one summary line:
#   e2e: N passed, N failed, N skipped
# Exits 1 if any test failed. A test's time limit is 180 s unless its file has a "# e2e-timeout: N" line.
# Logs go to $E2E_OUT_DIR (default: a new directory under /tmp); the tail of a failed test's log is printed.
# Usage: Tests/e2e/run-all.sh BINARY [NAME-FILTER]
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
trap - EXIT INT TERM

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY [NAME-FILTER]" >&2
    exit 2
fi
binary=$1
filter=${2:-}

tests=()
for t in "$here"/test-*.sh; do
    [[ -e "$t" ]] || continue
    [[ -z "$filter" || "$(basename "$t")" == *"$filter"* ]] && tests+=("$t")
done

passed=0 failed=0 skipped=0
report() { # STATUS NAME REASON
    printf '%-4s %s%s\n' "$1" "$2" "${3:+: $3}"
}

if [[ $EUID -ne 0 ]]; then
    echo "run-all: not running as root: every end-to-end test needs network namespaces; skipping them all"
    for t in "${tests[@]}"; do
        report SKIP "$(basename "$t" .sh)" "needs root"
        skipped=$((skipped + 1))
    done
    echo "e2e: $passed passed, $failed failed, $skipped skipped"
    exit 0
fi

out_dir=${E2E_OUT_DIR:-$(mktemp -d /tmp/conntrackr-e2e.XXXXXX)}
mkdir -p "$out_dir"
echo "run-all: ${#tests[@]} test(s) against $binary; logs in $out_dir"

for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    log_file=$out_dir/$name.log
    limit=$(sed -n 's/^# e2e-timeout: *\([0-9][0-9]*\).*/\1/p' "$t" | head -n 1)
    limit=${limit:-180}
    started=$SECONDS
    # The subshell's pid becomes timeout's pid through exec: unique while the test runs, so it names the lab.
    (
        export LAB_SUFFIX=$BASHPID
        echo "$LAB_SUFFIX" >"$log_file.suffix"
        exec timeout -k 15 "$limit" bash "$t" "$binary"
    ) >"$log_file" 2>&1 </dev/null
    rc=$?
    elapsed=$((SECONDS - started))
    suffix=$(cat "$log_file.suffix" 2>/dev/null)
    rm -f "$log_file.suffix"
    leaked=$(lab_reap "$suffix" | tr '\n' ' ')
    reason=$(grep -E '^(FAIL|SKIP): ' "$log_file" | tail -n 1 | sed -E 's/^(FAIL|SKIP): //')
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        status=FAIL reason="timed out after ${limit} s${reason:+ ($reason)}"
    elif [[ $rc -eq 0 && -n "$leaked" ]]; then
        status=FAIL reason="passed but left namespaces behind: $leaked"
    elif [[ $rc -eq 0 ]]; then
        status=PASS reason="${elapsed} s"
    elif [[ $rc -eq 77 ]]; then
        status=SKIP reason=${reason:-no reason given}
    else
        status=FAIL reason=${reason:-exit status $rc}
    fi
    report "$status" "$name" "$reason"
    case $status in
        PASS) passed=$((passed + 1)) ;;
        SKIP) skipped=$((skipped + 1)) ;;
        FAIL)
            failed=$((failed + 1))
            echo "     --- last lines of $log_file ---"
            tail -n 25 "$log_file" | sed 's/^/     | /'
            ;;
    esac
done

echo "e2e: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
