#!/usr/bin/env bash
# Run each test binary with a time limit; print a summary; fail if any fails.
# Environment: BIN (folder of the inferd binary), INFERD_FIXTURES (optional).
set -u
export INFERD_BIN="${INFERD_BIN:-${BIN:-bin}/inferd}"
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
