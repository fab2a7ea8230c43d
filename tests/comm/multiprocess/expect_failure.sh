#!/bin/sh
# expect_failure.sh LIMIT_SECONDS PATTERN COMMAND [ARGS...]
# Fault tests: passes when COMMAND exits non-zero within LIMIT_SECONDS and its output (stdout and
# stderr) matches the extended regular expression PATTERN. A job with a dead or stuck rank must fail,
# promptly and saying why; a hang or a success is a failure of the test.
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 LIMIT_SECONDS PATTERN COMMAND [ARGS...]" >&2
  exit 2
fi
limit=$1
pattern=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
cat "$out"
echo "---"
# 124: timeout stopped it. (137 alone is no proof of a hang: mpirun exits 128+9 when a rank was
# killed by SIGKILL, so the elapsed time decides.)
if [ "$rc" -eq 124 ] || [ "$elapsed" -ge "$limit" ]; then
  echo "FAIL: still running after ${limit} s (exit $rc): a hang"
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "FAIL: exited 0 after ${elapsed} s; expected a failure"
  exit 1
fi
if ! grep -Eq "$pattern" "$out"; then
  echo "FAIL: exited $rc after ${elapsed} s, but the output does not match '$pattern'"
  exit 1
fi
echo "PASS: exited $rc after ${elapsed} s; the output matches '$pattern'"
