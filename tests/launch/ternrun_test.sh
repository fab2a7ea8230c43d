#!/usr/bin/env bash
# ternrun as a user meets it: environment and output prefixes, fail-fast with the failing rank's
# exit code, signal forwarding, usage errors. usage: ternrun_test.sh TERNRUN
set -uo pipefail
ternrun=$1
fail() { echo "FAIL: $*"; exit 1; }
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }

# 1. Every rank sees its rank, the world size, the store and the job id; lines carry [rank].
out=$("$ternrun" -n 3 sh -c 'echo "rank=$TERN_RANK world=$TERN_WORLD_SIZE store=${TERN_STORE_ADDR:+set} job=${TERN_JOB_ID:+set}"') \
  || fail "ternrun -n 3 sh -c echo exited $?"
for r in 0 1 2; do
  grep -qx "\[$r\] rank=$r world=3 store=set job=set" <<<"$out" || fail "missing line for rank $r in: $out"
done
ok "environment and prefixes"

# 2. stderr is prefixed too and stays on stderr.
err=$("$ternrun" -n 2 sh -c 'echo oops >&2' 2>&1 >/dev/null)
grep -qx "\[1\] oops" <<<"$err" || fail "stderr not prefixed: $err"
ok "stderr prefixed"

# 3. One rank fails: ternrun exits with its code promptly and stops the others (which sleep).
start=$(date +%s)
"$ternrun" -n 3 --grace 2 sh -c 'if [ "$TERN_RANK" = 1 ]; then exit 7; fi; sleep 60' >/dev/null 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
[ $rc -eq 7 ] || fail "expected exit code 7 from the failing rank, got $rc"
[ $elapsed -lt 20 ] || fail "ternrun took ${elapsed}s to stop the job"
ok "fail-fast with the rank's exit code (${elapsed}s)"

# 4. A rank ignoring SIGTERM is killed after the grace period.
start=$(date +%s)
"$ternrun" -n 2 --grace 1 sh -c 'if [ "$TERN_RANK" = 0 ]; then exit 3; fi; trap "" TERM; sleep 60' >/dev/null 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
[ $rc -eq 3 ] || fail "expected 3, got $rc"
[ $elapsed -lt 20 ] || fail "a rank that ignores SIGTERM kept ternrun alive ${elapsed}s"
ok "SIGKILL after the grace period"

# 5. SIGTERM to ternrun reaches the ranks (which trap it and report).
tmp=$(mktemp)
"$ternrun" -n 2 sh -c 'trap "echo got-term; exit 0" TERM; sleep 60 & wait' >"$tmp" 2>&1 &
pid=$!
sleep 1
kill -TERM $pid
wait $pid
rc=$?
[ $(grep -c "got-term" "$tmp") -eq 2 ] || fail "SIGTERM not forwarded to both ranks: $(cat "$tmp")"
[ $rc -eq 143 ] || fail "expected exit 143 after SIGTERM, got $rc"
rm -f "$tmp"
ok "SIGTERM forwarded"

# 6. --keep-going: the other ranks run to the end; the exit code is still the failure's.
out=$("$ternrun" -n 2 --keep-going sh -c 'if [ "$TERN_RANK" = 0 ]; then exit 4; fi; sleep 1; echo finished' 2>/dev/null)
rc=$?
[ $rc -eq 4 ] || fail "--keep-going: expected exit 4, got $rc"
grep -qx "\[1\] finished" <<<"$out" || fail "--keep-going stopped rank 1: $out"
ok "--keep-going"

# 7. Usage errors exit 2; a missing program is reported by the rank (exit 127).
"$ternrun" -n 0 true >/dev/null 2>&1; [ $? -eq 2 ] || fail "-n 0 should be a usage error"
"$ternrun" -n 2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "no program should be a usage error"
"$ternrun" --bogus -n 2 true >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown flag should be a usage error"
err=$("$ternrun" -n 1 /nonexistent/prog 2>&1); rc=$?
[ $rc -eq 127 ] || fail "missing program: expected 127, got $rc"
grep -q "cannot run '/nonexistent/prog'" <<<"$err" || fail "missing program not named: $err"
"$ternrun" --help | grep -q -- "--timeout" || fail "--help does not list --timeout"
ok "usage errors"

echo "$passed passed, 0 failed"
