#!/usr/bin/env bash
# tern-finetune as issue 7 uses it: pretrain the cnn on Fashion-MNIST classes 0-4 with tern-train, then
# fine-tune the int8 model on classes 5-9 (a new head) within --memory-budget 256KB, bias-only, with a
# sparse update (f32 and int8 master copies) and with the scheme --update auto searches for; each must
# beat chance (20%) by a wide margin and report a measured arena high-water equal to the planned peak,
# and a full update must be refused as over the budget (exit 1, saying by how much).
# usage: finetune.sh TERN_TRAIN TERN_FINETUNE
set -uo pipefail
train=$1
finetune=$2
fail() { echo "FAIL: $*"; exit 1; }
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "SKIP: no Fashion-MNIST"; exit 77; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$train" --model cnn --classes 0-4 --epochs 1 --limit-train 6000 --threads 1 --checkpoint-dir "$dir/ckpt" \
  >"$dir/train.log" 2>&1 || { cat "$dir/train.log"; fail "tern-train --classes 0-4 failed"; }

check() {  # name, update scheme, extra flags; accuracy must exceed 0.45 (chance 0.20; measured 0.73 bias-only, 0.80 sparse)
  local name=$1 scheme=$2
  shift 2
  "$finetune" --checkpoint "$dir/ckpt" --classes 5-9 --update "$scheme" --qas on --memory-budget 256KB \
    --epochs 1 --lr 0.05 --limit-train 2000 --limit-test 1000 --metrics "$dir/$name.jsonl" "$@" >"$dir/$name.log" 2>&1 \
    || { cat "$dir/$name.log"; fail "$name: tern-finetune failed"; }
  grep -q "(equal)" "$dir/$name.log" || { cat "$dir/$name.log"; fail "$name: high-water differs from the plan"; }
  python3 - "$dir/$name.jsonl" "$name" <<'PY' || fail "$name: final metrics"
import json, sys
final = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]
assert final["event"] == "final", final
acc, peak, flash = final["test_accuracy"], final["peak_memory_bytes"], final["flash_bytes"]
print(f"{sys.argv[2]}: test accuracy {acc:.4f}, peak {peak} bytes, flash {flash} bytes")
assert acc > 0.45, f"accuracy {acc} not above chance by the margin"
assert 0 < peak <= 256 * 1024, f"peak {peak} over 256KB"
assert flash > 0
PY
}
check bias bias
check sparse "bias:all;weight:4=0.25"
check sparse_int8_master "bias:all;weight:4=0.25" --master int8  # the trained rows kept as int8 in place
grep -Eq '"master": ?"int8"' "$dir/sparse_int8_master.jsonl" || fail "sparse_int8_master: the metrics do not say int8"
check auto auto --probe-images 200 --threads 2
grep -q "^update search (greedy): .*planned peak" "$dir/auto.log" || { cat "$dir/auto.log"; fail "auto: no search result"; }

err=$("$finetune" --checkpoint "$dir/ckpt" --update full --memory-budget 256KB --limit-train 50 --limit-test 50 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "over-budget plan: exit $rc, expected 1"
grep -q "over by" <<<"$err" || fail "over-budget message does not say by how much: $err"
# Bad schedule and momentum flags are usage errors (exit 2) that name the flag.
usage() {  # expected text, then the extra flags
  local want=$1
  shift
  err=$("$finetune" --checkpoint "$dir/ckpt" --limit-train 50 --limit-test 50 "$@" 2>&1)
  rc=$?
  [ $rc -eq 2 ] || fail "$*: exit $rc, expected 2: $err"
  grep -q -- "$want" <<<"$err" || fail "$*: message does not name $want: $err"
}
usage "--lr-schedule" --lr-schedule linear
usage "--lr-schedule" --lr-schedule "cosine:min_lr=x"
usage "--lr-schedule" --lr-schedule "cosine:warmup=50"  # no steps left after the warm-up
usage "--momentum" --momentum 1
usage "--momentum" --momentum -0.5
usage "--memory-budget" --update auto --memory-budget 0  # the search needs a budget
usage "auto:greedy" --update auto:random
usage "--threads" --update auto --memory-budget 256KB --threads 0
usage "--hidden-group" --hidden-group 16XB
usage "--master" --master int4
echo "ok: bias-only, sparse and searched updates within 256KB above chance; full update refused over budget; bad flags refused"
