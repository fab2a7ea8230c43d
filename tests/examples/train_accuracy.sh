#!/usr/bin/env bash
# Runs tern-train and checks the final test accuracy in its metrics file against a floor.
# usage: train_accuracy.sh TERN_TRAIN MIN_ACCURACY [tern-train flags...]
set -euo pipefail
bin=$1 min=$2
shift 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" "$@" --metrics "$out/metrics.jsonl"
acc=$(grep '"event": "final"' "$out/metrics.jsonl" | sed -E 's/.*"test_accuracy": ([0-9.eE+-]+).*/\1/')
echo "final test accuracy: $acc (required >= $min)"
awk -v a="$acc" -v m="$min" 'BEGIN { exit !(a + 0 >= m + 0) }'
