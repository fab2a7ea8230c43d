#!/bin/sh
# Fault test with real processes: while a 3-rank tcp job sets up (rank 2 joins only once the
# intruder is done, so rank 1 is still accepting), an outside process sends rank 1 garbage and
# another job's handshake. Both must be rejected (and logged), and the job must run every
# collective correctly. (Rank 2 used to join after a fixed 2 s, which a loaded machine could
# outlast: the intruder then found rank 1 no longer listening.)
# usage: intrusion_test.sh TERNRUN CHECK INTRUDER
set -u
ternrun=$1 check=$2 intruder=$3
done_file=$(mktemp -u "${TMPDIR:-/tmp}/tern-intruder-done.XXXXXX")
trap 'rm -f "$done_file"' EXIT
out=$(TERN_SHM=0 INTRUDER_DONE="$done_file" timeout 120 "$ternrun" -n 3 sh -c '
  if [ "$TERN_RANK" = 0 ]; then ("$0"; touch "$INTRUDER_DONE") & fi
  if [ "$TERN_RANK" = 2 ]; then
    waited=0
    while [ ! -e "$INTRUDER_DONE" ] && [ $waited -lt 600 ]; do sleep 0.1; waited=$((waited + 1)); done
  fi
  exec "$1" --comm tcp --timeout-ms 60000' "$intruder" "$check" 2>&1)
rc=$?
echo "$out" | grep -E "intruder|rejected|passed" 
[ $rc -eq 0 ] || { echo "FAIL: the job failed (exit $rc)"; echo "$out" | tail -20; exit 1; }
echo "$out" | grep -q "^\[0\] [0-9]* passed, 0 failed" || { echo "FAIL: no clean check summary"; exit 1; }
n=$(echo "$out" | grep -c "rank 1 rejected a connection")
[ "$n" -ge 2 ] || { echo "FAIL: expected 2 rejected connections at rank 1, saw $n"; exit 1; }
echo "ok: garbage and a foreign job rejected, the job unaffected"
