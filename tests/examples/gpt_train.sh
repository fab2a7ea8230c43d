#!/usr/bin/env bash
# tern-gpt as a user meets it: --help, usage errors (exit 2), missing data (exit 1, naming the
# directory and the package), and a few training steps of a tiny gpt-tiny on the fortunes text
# that must lower the validation loss and print a sample. Skips (77) without the fortunes package.
# usage: gpt_train.sh TERN_GPT
set -uo pipefail
bin=$1
fail() { echo "FAIL: $*"; exit 1; }

help=$("$bin" --help) || fail "--help exited non-zero"
for flag in --data-dir --steps --batch-size --seq-len --d-model --layers --heads --lr --eval-every \
            --sample-chars --temperature --seed --metrics; do
  grep -q -- "$flag" <<<"$help" || fail "--help does not list $flag"
done

"$bin" --d-model 30 --heads 4 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "--heads not dividing --d-model: exit $rc, expected 2"
"$bin" --steps 0 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "--steps 0: exit $rc, expected 2"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
err=$("$bin" --data-dir "$dir/none" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "missing data: exit $rc, expected 1"
grep -q "$dir/none" <<<"$err" || fail "missing data error does not name the directory: $err"
grep -q "fortunes\` package" <<<"$err" || fail "missing data error does not name the package: $err"

[ -d /usr/share/games/fortunes ] || { echo "SKIP: Debian package fortunes not installed"; exit 77; }

# 60 steps of a 1-layer, 32-wide model (about 20k parameters): the loss starts at ln(vocab) ~ 4.7
# nats/char and falls below 3.6 as the character frequencies and common pairs are learnt.
out=$("$bin" --steps 60 --d-model 32 --layers 1 --heads 2 --seq-len 16 --batch-size 8 --lr 5e-3 \
             --eval-every 20 --eval-windows 32 --sample-chars 60 --seed 3 --metrics "$dir/m.jsonl") ||
  fail "training run failed: $out"
final=$(grep '"event": "final"' "$dir/m.jsonl") || fail "no final metrics line"
initial=$(sed -E 's/.*"initial_val_loss": ([0-9.eE+-]+).*/\1/' <<<"$final")
val=$(sed -E 's/.*"val_loss": ([0-9.eE+-]+).*/\1/' <<<"$final")
awk -v a="$initial" -v b="$val" 'BEGIN { exit !(a > 4.0 && b < 3.6 && b < a - 0.5) }' ||
  fail "validation loss went from $initial to $val nats/char; expected a start near ln(vocab) and an end below 3.6"
[ "$(grep -c '"event": "eval"' "$dir/m.jsonl")" -eq 4 ] || fail "expected evaluations at steps 0, 20, 40, 60"
sample=$(sed -n '/^sample (/,$p' <<<"$out" | tail -n +2)
[ "$(printf '%s' "$sample" | wc -c)" -ge 60 ] || fail "the 60 sampled characters were not printed: $out"
grep -q "validation loss: .* nats/char" <<<"$out" || fail "no validation loss line: $out"

# The same seed gives the same losses and the same sample (one thread: bit-exact).
short=(--steps 6 --d-model 16 --layers 1 --heads 2 --seq-len 8 --batch-size 4 --eval-every 3 --eval-windows 8
       --sample-chars 30 --seed 9 --threads 1)
"$bin" "${short[@]}" --metrics "$dir/a.jsonl" >/dev/null || fail "short run failed"
"$bin" "${short[@]}" --metrics "$dir/b.jsonl" >/dev/null || fail "short run failed"
strip() { sed -E 's/"seconds": [^,}]*//; s/"config": .*//' "$1"; }
[ "$(strip "$dir/a.jsonl")" == "$(strip "$dir/b.jsonl")" ] ||
  fail "two runs with --seed 9 differ: $(diff <(strip "$dir/a.jsonl") <(strip "$dir/b.jsonl"))"
echo "ok: --help, usage errors (2), missing data (1); validation loss $initial -> $val nats/char"
