#!/usr/bin/env bash
# Run each test binary with a time limit; print a summary; fail if any fails.
# Environment: BIN (folder of the inferd binary), INFERD_FIXTURES (optional).
set -u
export INFERD_BIN="${INFERD_BIN:-${BIN:-bin}/inferd}"
# the fault-injection build of the same sources (supervision tests only)
export INFERD_FAULTS_BIN="${INFERD_FAULTS_BIN:-${BUILD:-build}/tests/inferd-faults}"
# device lock files of the servers the tests start: private to this run,
# so two test runs (or a real server) on this machine never collide
INFERD_RUNTIME_DIR="$(mktemp -d /tmp/inferd-test-run.XXXXXX)"
export INFERD_RUNTIME_DIR
trap 'rm -rf "$INFERD_RUNTIME_DIR"' EXIT
# sanitizer reports get exit codes no test expects from the binary
export ASAN_OPTIONS="${ASAN_OPTIONS:-exitcode=86:detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=87}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-exitcode=88:halt_on_error=1}"
fail=0
for t in "$@"; do
	start=$(date +%s)
	if timeout 600 "$t" >"$t.log" 2>&1; then
		echo "PASS $(basename "$t") ($(($(date +%s) - start)) s)"
	else
		echo "FAIL $(basename "$t") ($(($(date +%s) - start)) s), log: $t.log"
		grep -E "^FAIL|ERROR|Sanitizer|runtime error" "$t.log" | head -20
		fail=1
	fi
done
exit $fail
