#!/usr/bin/env bash
# Resume, as a user would: a 2-rank run (ternrun) that dies after a checkpoint is resumed, and its
# per-step losses must equal an uninterrupted run's bit for bit. Then the checkpoint is damaged:
# --resume must refuse, name the file and the problem, and leave the file as it was.
# usage: train_resume.sh TERNRUN TERN_TRAIN [EXTRA TRAIN FLAGS...] (e.g. --compress dgc:ratio=0.01:
# the compressors' per-rank state must come back too, or the losses drift)
set -uo pipefail
ternrun=$1 train=$2
shift 2
fail() { echo "FAIL: $*"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
args=(--model cnn --epochs 2 --limit-train 1024 --batch-size 32 --log-every 1 --seed 5 "$@")
steps() { grep '"event": "step"' "$1" | sed -E 's/.*"step": ([0-9]+), "loss": ([^,}]*).*/\1 \2/'; }

"$ternrun" -n 2 "$train" "${args[@]}" --checkpoint-dir "$dir/a" --checkpoint-every 10 --metrics "$dir/a.jsonl" \
  >/dev/null 2>&1 || fail "uninterrupted run failed"
"$ternrun" -n 2 "$train" "${args[@]}" --checkpoint-dir "$dir/b" --checkpoint-every 10 --metrics "$dir/b1.jsonl" \
  --exit-after-steps 25 >/dev/null 2>&1
rc=$?
[ $rc -eq 75 ] || fail "the crashing run should exit 75, got $rc"
ls "$dir/b"/ckpt-0000000020.tern >/dev/null || fail "no checkpoint at step 20: $(ls "$dir/b")"
out=$("$ternrun" -n 2 "$train" "${args[@]}" --checkpoint-dir "$dir/b" --checkpoint-every 10 --resume \
  --metrics "$dir/b2.jsonl" 2>&1) || fail "resumed run failed: $out"
grep -q "resuming from .*ckpt-0000000020.tern: step 20" <<<"$out" || fail "did not resume from step 20: $out"

steps "$dir/a.jsonl" | awk '$1 > 20' >"$dir/expected"
steps "$dir/b2.jsonl" >"$dir/got"
[ -s "$dir/expected" ] || fail "no step lines logged"
diff "$dir/expected" "$dir/got" >/dev/null || { diff "$dir/expected" "$dir/got" | head; fail "losses after resume differ"; }
echo "ok: steps 21..$(tail -1 "$dir/got" | cut -d' ' -f1) after resume equal the uninterrupted run's bit for bit"

# A truncated checkpoint is refused, named, and left as it was.
latest=$(ls "$dir/b"/ckpt-*.tern | tail -1)
head -c 1000 "$latest" >"$dir/cut" && cp "$dir/cut" "$latest"
before=$(md5sum "$latest")
err=$("$ternrun" -n 2 "$train" "${args[@]}" --checkpoint-dir "$dir/b" --resume 2>&1); rc=$?
[ $rc -ne 0 ] || fail "resuming from a truncated checkpoint succeeded"
grep -q "$(basename "$latest")" <<<"$err" || fail "the error does not name the file: $err"
grep -qi "truncated" <<<"$err" || fail "the error does not say truncated: $err"
[ "$before" = "$(md5sum "$latest")" ] || fail "the refused checkpoint was modified"
echo "ok: truncated checkpoint refused and untouched"

# A checkpoint of another model is refused, naming both.
err=$("$train" --model mlp --epochs 1 --limit-train 256 --checkpoint-dir "$dir/a" --resume --comm local --ranks 2 2>&1); rc=$?
[ $rc -ne 0 ] || fail "resuming an mlp from a cnn checkpoint succeeded"
grep -q "cnn" <<<"$err" && grep -q "mlp" <<<"$err" || fail "foreign-model error does not name both models: $err"
echo "ok: another model's checkpoint refused"
echo "3 passed, 0 failed"
