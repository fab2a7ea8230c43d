#!/bin/sh
# small_dev_shm_test.sh TERNRUN CHECK
# A one-host world in a /dev/shm too small for its default rings — a container's 64 MB, here a
# private tmpfs of 12 MB and of 1 MB mounted in a new mount namespace: 4 ranks must shrink their
# rings (12 MB) or fall back to TCP (1 MB), say so once, and pass every collective check, the
# 16 MB ones included. (Rings sized by ftruncate alone died with SIGBUS here.) Skipped (77) where
# this user may not make a mount namespace.
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 TERNRUN CHECK" >&2
  exit 2
fi
ternrun=$1
check=$2
if ! unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm' 2>/dev/null; then
  echo "SKIP: cannot mount a private /dev/shm here (unshare -m needs CAP_SYS_ADMIN)"
  exit 77
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
# size of /dev/shm, what rank 0 must say about it
for case in "12m|shared-memory rings of [0-9.]+ KB instead of 4.00 MB" \
            "1m|shared-memory transport unavailable: rank [0-9]: /dev/shm has [0-9.]+ (KB|MB) free; 4 ranks need at least .*; using TCP"; do
  size=${case%%|*}
  said=${case#*|}
  timeout --kill-after=10 240 unshare -m sh -c \
    "mount -t tmpfs -o size=$size tmpfs /dev/shm && exec \"\$0\" -n 4 \"\$1\" --comm tcp --timeout-ms 60000" \
    "$ternrun" "$check" >"$out" 2>&1
  rc=$?
  grep -v ' ok ' "$out"
  echo "--- /dev/shm of $size: exit $rc"
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: the job exited $rc"
    status=1
  fi
  if ! grep -q ' 0 failed' "$out"; then
    echo "FAIL: not every check passed"
    status=1
  fi
  if ! grep -Eq "^\[0\] tern tcp: .*$said" "$out"; then
    echo "FAIL: rank 0 did not say: $said"
    status=1
  fi
  if [ "$(grep -c 'tern tcp: ' "$out")" -ne 1 ]; then
    echo "FAIL: the /dev/shm note should come once, from rank 0"
    status=1
  fi
done
exit $status
