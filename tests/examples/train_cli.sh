#!/usr/bin/env bash
# tern-train's command line as a user meets it: --help, bad flags (exit 2), missing data (exit 1).
# usage: train_cli.sh TERN_TRAIN
set -uo pipefail
bin=$1
fail() { echo "FAIL: $*"; exit 1; }

help=$("$bin" --help) || fail "--help exited non-zero"
for flag in --model --dataset --data-dir --epochs --batch-size --lr --optimizer --momentum --weight-decay \
            --seed --threads --metrics; do
  grep -q -- "$flag" <<<"$help" || fail "--help does not list $flag"
done
grep -q "default: 64" <<<"$help" || fail "--help does not show defaults"

"$bin" --epochs two >/dev/null 2>/dev/null ; rc=$?
[ $rc -eq 2 ] || fail "malformed value: exit $rc, expected 2"
"$bin" --no-such-flag 1 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "unknown flag: exit $rc, expected 2"
"$bin" --model nope --dataset synthetic >/dev/null 2>&1; rc=$?
[ $rc -eq 1 ] || fail "unknown model: exit $rc, expected 1"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
err=$("$bin" --data-dir "$dir" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "missing dataset: exit $rc, expected 1"
grep -q "$dir/train-images-idx3-ubyte" <<<"$err" || fail "missing dataset error does not name the file: $err"
echo "ok: --help, usage errors (2), runtime errors (1) with the file named"
