#!/usr/bin/env bash
# Same seed, same numbers: two identical short runs of tern-train must log identical losses and
# accuracies (timings excluded), and a different seed must change them.
# usage: train_determinism.sh TERN_TRAIN [tern-train flags...]   (or TERNRUN -n N TERN_TRAIN ...)
set -euo pipefail
bin=$1
shift
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
strip() { sed -E 's/, "(samples_per_s|[a-z_]*seconds|comm_hidden_fraction|config)": ("[^"]*"|[^,}]*)//g' "$1"; }
"$bin" "$@" --seed 7 --metrics "$out/a.jsonl" >/dev/null
"$bin" "$@" --seed 7 --metrics "$out/b.jsonl" >/dev/null
"$bin" "$@" --seed 8 --metrics "$out/c.jsonl" >/dev/null
if ! diff <(strip "$out/a.jsonl") <(strip "$out/b.jsonl"); then
  echo "FAIL: two runs with the same seed differ"; exit 1
fi
if diff -q <(strip "$out/a.jsonl") <(strip "$out/c.jsonl") >/dev/null; then
  echo "FAIL: a different seed gave identical results"; exit 1
fi
echo "identical with the same seed, different with another"
cat "$out/a.jsonl"
