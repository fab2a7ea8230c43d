#!/usr/bin/env bash
# Checkpoint and resume in tern-train's pipeline mode, as a user would, on 4 ranks: a run that dies
# after a checkpoint is resumed and its per-step losses equal an uninterrupted run's bit for bit;
# the checkpoint is an ordinary one of the unsplit model (a data-parallel run resumes it); a run
# written with half the stages resumes with these (losses within f32 tolerance), or, when gradients
# are compressed, is refused naming both stage counts; another number of replicas and a truncated
# file are refused.
# usage: train_pipeline_resume.sh TERN_TRAIN STAGES [EXTRA TRAIN FLAGS...] -- LAUNCHER [ARGS...]
# The launcher is called as LAUNCHER ARGS... N TERN_TRAIN ..., e.g. "-- ternrun -n" or
# "-- mpirun --oversubscribe -np".
set -uo pipefail
train=$1 stages=$2
shift 2
extra=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
[ $# -gt 1 ] || { echo "usage: $0 TERN_TRAIN STAGES [FLAGS...] -- LAUNCHER [ARGS...]"; exit 2; }
shift
launch=("$@")
fail() { echo "FAIL: $*"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ranks=4 replicas=$((4 / stages)) half=$((stages / 2))
compressed=0
[[ " ${extra[*]-} " == *" --compress "* ]] && compressed=1
args=(--model mlp --epochs 2 --limit-train 1024 --batch-size 32 --micro-batches 4 --log-every 1 --seed 5
      --checkpoint-every 10 ${extra[@]+"${extra[@]}"})
run() { local n=$1; shift; "${launch[@]}" "$n" "$train" "${args[@]}" "$@"; }
steps() { grep '"event": "step"' "$1" | sed -E 's/.*"step": ([0-9]+), "loss": ([^,}]*).*/\1 \2/'; }
passed=0

# 1. Crash after the checkpoint at step 20, resume, and continue exactly as the uninterrupted run.
run $ranks --pipeline-stages "$stages" --checkpoint-dir "$dir/a" --metrics "$dir/a.jsonl" >/dev/null 2>&1 ||
  fail "uninterrupted run failed"
run $ranks --pipeline-stages "$stages" --checkpoint-dir "$dir/b" --metrics "$dir/b1.jsonl" --exit-after-steps 25 \
  >/dev/null 2>&1
rc=$?
[ $rc -eq 75 ] || fail "the crashing run should exit 75, got $rc"
ls "$dir/b"/ckpt-0000000020.tern >/dev/null || fail "no checkpoint at step 20: $(ls "$dir/b")"
cp -r "$dir/b" "$dir/c"  # for the data-parallel resume below
out=$(run $ranks --pipeline-stages "$stages" --checkpoint-dir "$dir/b" --resume --metrics "$dir/b2.jsonl" 2>&1) ||
  fail "resumed run failed: $out"
grep -q "resuming from .*ckpt-0000000020.tern: step 20" <<<"$out" || fail "did not resume from step 20: $out"
steps "$dir/a.jsonl" | awk '$1 > 20' >"$dir/expected"
steps "$dir/b2.jsonl" >"$dir/got"
[ -s "$dir/expected" ] || fail "no step lines logged"
diff "$dir/expected" "$dir/got" >/dev/null || { diff "$dir/expected" "$dir/got" | head; fail "losses after resume differ"; }
echo "ok: $stages stages x $replicas replicas: steps 21..$(tail -1 "$dir/got" | cut -d' ' -f1) after resume equal the uninterrupted run's bit for bit"
passed=$((passed + 1))

# 2. The file holds the unsplit model and its optimizer state: a data-parallel run with as many
# ranks as there were replicas resumes it (restore refuses any tensor missing or extra).
if [ $compressed -eq 0 ]; then
  out=$("${launch[@]}" "$replicas" "$train" --model mlp --epochs 2 --limit-train 1024 --batch-size 32 --seed 5 \
    --checkpoint-dir "$dir/c" --resume 2>&1) || fail "a data-parallel run could not resume the pipeline checkpoint: $out"
  grep -q "resuming from .*ckpt-0000000020.tern: step 20" <<<"$out" || fail "data-parallel run did not resume: $out"
  echo "ok: a data-parallel run of $replicas rank(s) resumes the pipeline checkpoint"
  passed=$((passed + 1))
fi

# 3. A run with half the stages (and half the ranks: as many replicas) resumed with $stages stages.
# The per-parameter optimizer state lets each stage pick its part. Splitting a model does not change
# its arithmetic, so the losses come out identical in practice; the bound (1e-5 relative) leaves room
# for a different summation order (e.g. --clip-grad-norm sums the stages' norms).
half_ranks=$((half * replicas))
run $half_ranks --pipeline-stages "$half" --checkpoint-dir "$dir/h" --metrics "$dir/h1.jsonl" --exit-after-steps 25 \
  >/dev/null 2>&1
rc=$?
[ $rc -eq 75 ] || fail "the crashing $half-stage run should exit 75, got $rc"
out=$(run $ranks --pipeline-stages "$stages" --checkpoint-dir "$dir/h" --resume --metrics "$dir/h2.jsonl" 2>&1)
rc=$?
if [ $compressed -eq 0 ]; then
  [ $rc -eq 0 ] || fail "resuming a $half-stage checkpoint with $stages stages failed: $out"
  grep -q "written with $half pipeline stages, continuing with $stages" <<<"$out" || fail "no note of the change: $out"
  steps "$dir/h2.jsonl" >"$dir/got"
  [ "$(wc -l <"$dir/got")" -eq "$(wc -l <"$dir/expected")" ] || fail "resumed $half-stage run logged other steps"
  paste "$dir/expected" "$dir/got" | awk '
    $1 != $3 { print "step " $1 " vs " $3; bad = 1 }
    { d = $2 - $4; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2; if (d > 1e-5 * (s > 1 ? s : 1)) { print "step " $1 ": " $2 " vs " $4; bad = 1 } }
    END { exit bad }' || fail "losses after resuming with another number of stages differ beyond 1e-5"
  echo "ok: a $half-stage checkpoint resumed with $stages stages continues the $stages-stage run's losses"
else
  [ $rc -ne 0 ] || fail "a compressed $half-stage checkpoint was resumed with $stages stages"
  grep -q "for $half pipeline stages, this run has $stages" <<<"$out" || fail "the refusal does not name both: $out"
  echo "ok: compressor state of $half stages refused with $stages stages, naming both"
fi
passed=$((passed + 1))

# 4. Another number of replicas deals the samples differently: refused, naming both counts.
if [ "$stages" -gt 1 ]; then
  other=$((stages / 2)) other_replicas=$((4 / (stages / 2)))
  err=$(run $ranks --pipeline-stages "$other" --checkpoint-dir "$dir/a" --resume 2>&1)
  rc=$?
  [ $rc -ne 0 ] || fail "a $replicas-replica checkpoint was resumed by $other_replicas replicas"
  grep -q "$replicas data-parallel replica" <<<"$err" && grep -q "this run has $other_replicas" <<<"$err" ||
    fail "the replica refusal does not name both counts: $err"
  echo "ok: a checkpoint of $replicas replica(s) refused by a run of $other_replicas"
  passed=$((passed + 1))
fi

# 5. A truncated checkpoint is refused, named, and left as it was.
latest=$(ls "$dir/b"/ckpt-*.tern | tail -1)
head -c 1000 "$latest" >"$dir/cut" && cp "$dir/cut" "$latest"
before=$(md5sum "$latest")
err=$(run $ranks --pipeline-stages "$stages" --checkpoint-dir "$dir/b" --resume 2>&1)
rc=$?
[ $rc -ne 0 ] || fail "resuming from a truncated checkpoint succeeded"
grep -q "$(basename "$latest")" <<<"$err" || fail "the error does not name the file: $err"
grep -qi "truncated" <<<"$err" || fail "the error does not say truncated: $err"
[ "$before" = "$(md5sum "$latest")" ] || fail "the refused checkpoint was modified"
echo "ok: truncated checkpoint refused and untouched"
passed=$((passed + 1))
echo "$passed passed, 0 failed"
