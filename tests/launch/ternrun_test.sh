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
err=$("$ternrun" -n 2 2>&1 >/dev/null); [ $? -eq 2 ] || fail "no program should be a usage error"
# The message first, then the usage line; the flag list is --help's, not the error's.
[ "$(head -2 <<<"$err")" = "ternrun: no PROGRAM given
usage: ternrun -n N [flags] PROGRAM [ARGS...]" ] || fail "usage error reads: $err"
grep -q -- "--grace" <<<"$err" && fail "a usage error printed the whole help: $err"
"$ternrun" --bogus -n 2 true >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown flag should be a usage error"
err=$("$ternrun" -n 1 /nonexistent/prog 2>&1); rc=$?
[ $rc -eq 127 ] || fail "missing program: expected 127, got $rc"
grep -q "cannot run '/nonexistent/prog'" <<<"$err" || fail "missing program not named: $err"
"$ternrun" --help | grep -q -- "--timeout" || fail "--help does not list --timeout"
"$ternrun" -n 2 --bind-to core true >/dev/null 2>&1; [ $? -eq 2 ] || fail "--bind-to core (not a policy) should be a usage error"
ok "usage errors"

# 8. CPU binding: by default, as with --bind-to auto (or cores), and at least as many CPUs as ranks each
# rank runs on its own CPUs (read back from the kernel), disjoint from the others'; with fewer, or with
# --bind-to none, every rank keeps ternrun's.
cpus_of() {  # expands a kernel cpulist ("0-2,5") to one id per line
  local IFS=, part
  for part in $1; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}
allowed=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)
ncpu=$(cpus_of "$allowed" | wc -l)
lists() { "$ternrun" "$@" sh -c 'awk "/^Cpus_allowed_list/ {print \$2}" /proc/self/status' | sed 's/^\[[0-9]*\] //'; }
for n in 2 3; do
  out=$(lists -n $n --bind-to auto) || fail "ternrun -n $n --bind-to auto failed"
  [ $(wc -l <<<"$out") -eq $n ] || fail "-n $n: expected $n lists, got: $out"
  if [ $ncpu -ge $n ]; then
    all=$(for l in $out; do cpus_of "$l"; done | sort -n)
    [ $(wc -l <<<"$all") -eq $(sort -nu <<<"$all" | wc -l) ] || fail "-n $n on $ncpu CPUs: ranks share CPUs: $out"
    [ $(sort -u <<<"$out" | wc -l) -eq $n ] || fail "-n $n: ranks not bound apart: $out"
    [ "$(lists -n $n --bind-to cores | sort)" = "$(sort <<<"$out")" ] || fail "--bind-to cores differs from auto"
    [ "$(lists -n $n | sort)" = "$(sort <<<"$out")" ] || fail "ternrun -n $n does not bind as --bind-to auto does"
  else
    [ "$(sort -u <<<"$out")" = "$allowed" ] || fail "-n $n on $ncpu CPUs should leave ranks unbound ($allowed): $out"
    "$ternrun" -n $n --bind-to cores true >/dev/null 2>&1; [ $? -eq 2 ] || fail "--bind-to cores with $n ranks on $ncpu CPUs should be refused"
  fi
  out=$(lists -n $n --bind-to none) || fail "ternrun -n $n --bind-to none failed"
  [ "$(sort -u <<<"$out")" = "$allowed" ] || fail "ternrun -n $n --bind-to none changed the ranks' CPUs: $out"
done
big=$((ncpu + 1))
out=$(lists -n $big --bind-to auto) || fail "ternrun -n $big --bind-to auto failed"
[ "$(sort -u <<<"$out")" = "$allowed" ] || fail "-n $big on $ncpu CPUs should leave ranks unbound: $out"
"$ternrun" -n $big --bind-to cores true >/dev/null 2>&1; [ $? -eq 2 ] || fail "--bind-to cores with more ranks than CPUs should be refused"
ok "CPU binding ($ncpu CPUs: $allowed)"

echo "$passed passed, 0 failed"
