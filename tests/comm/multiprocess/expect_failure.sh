#!/bin/sh
# expect_failure.sh [--ranks-named NAME] LIMIT_SECONDS PATTERN COMMAND [ARGS...]
# Fault tests: passes when COMMAND exits non-zero within LIMIT_SECONDS and its output (stdout and
# stderr) matches the extended regular expression PATTERN. A job with a dead or stuck rank must fail,
# promptly and saying why; a hang or a success is a failure of the test.
#
# --ranks-named NAME: COMMAND is a launcher (mpirun) whose ranks are the processes called NAME below
# it. Once every rank has exited, the launcher gets 15 s to follow; if it is still there after that,
# it is stuck on its own (Open MPI 4.1's mpirun deadlocks in PMIx_server_finalize in some jobs whose
# ranks exit with an error, about one in four on a loaded machine, every rank already gone): it is
# killed, said so, and the ranks' output decides. Ranks that do not exit within the limit still fail.
set -u
ranks_named=""
if [ "${1:-}" = "--ranks-named" ]; then
  ranks_named=$2
  shift 2
fi
if [ $# -lt 3 ]; then
  echo "usage: $0 [--ranks-named NAME] LIMIT_SECONDS PATTERN COMMAND [ARGS...]" >&2
  exit 2
fi
limit=$1
pattern=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1 &
pid=$!

# Live (not zombie) processes called $ranks_named among $pid's descendants.
live_ranks() {
  ps -eo pid=,ppid=,stat=,comm= | awk -v root="$pid" -v name="$ranks_named" '
    { parent[$1] = $2; state[$1] = $3; comm[$1] = $4 }
    END {
      n = 0
      for (p in parent) {
        if (comm[p] != substr(name, 1, 15) || state[p] ~ /^Z/) continue
        for (q = parent[p]; q != "" && q != 0 && q != 1; q = parent[q]) if (q == root) { n++; break }
      }
      print n
    }'
}

launcher_stuck=0
if [ -n "$ranks_named" ]; then
  seen=0
  gone_since=""
  while kill -0 "$pid" 2>/dev/null; do
    now=$(date +%s)
    if [ "$(live_ranks)" -gt 0 ]; then
      seen=1
      gone_since=""
    elif [ "$seen" -eq 1 ]; then
      [ -n "$gone_since" ] || gone_since=$now
      if [ $((now - gone_since)) -ge 15 ]; then
        launcher_stuck=1
        pkill -KILL -P "$pid" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
        break
      fi
    fi
    sleep 1
  done
fi
wait "$pid"
rc=$?
elapsed=$(($(date +%s) - start))
cat "$out"
echo "---"
if [ "$launcher_stuck" -eq 1 ]; then
  echo "note: every '$ranks_named' rank had exited by $((gone_since - start)) s; the launcher was still running 15 s later and was killed (stuck on its own); the ranks' output decides"
  if [ $((gone_since - start)) -ge "$limit" ]; then
    echo "FAIL: the ranks ran for ${limit} s or more: a hang"
    exit 1
  fi
  rc=1
fi
# 124: timeout stopped it. (137 alone is no proof of a hang: mpirun exits 128+9 when a rank was
# killed by SIGKILL, so the elapsed time decides.)
if [ "$launcher_stuck" -eq 0 ] && { [ "$rc" -eq 124 ] || [ "$elapsed" -ge "$limit" ]; }; then
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
