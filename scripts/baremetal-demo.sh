#!/usr/bin/env bash
# On-device fine-tuning on an emulated Cortex-M4 (ondevice/baremetal): pretrain the cnn on
# Fashion-MNIST classes 0-4 (tern-train), convert it to int8 with a new head for classes 5-9
# (tern-finetune --output), embed model, images and the planned sparse-update step
# (tern-model-to-c), cross-compile, run under qemu-system-arm -M mps2-an386 and check what the
# device prints and its exit status: its accuracy before and after training must equal the host's.
# Usage: scripts/baremetal-demo.sh [--model cnn|mcunet] [--master f32|int16|int8] [--no-install]
#          [--build DIR] [--work DIR] [--tern-train BIN --tern-finetune BIN --model-to-c BIN]
#   --model mcunet: the network and 237.9 KB sparse plan that meet issue 7's accuracy goal on the
#   host, run on the device in a 256 KB RAM (default cnn: a smaller, faster demo)
#   --master: how the device keeps its trained weights (tern-finetune --master; default f32)
#   --no-install: exit 77 (skipped) when the toolchain or QEMU is missing instead of installing it
#   (ctest's baremetal.qemu_finetune uses this, with the programs it built).
set -euo pipefail
root=$(cd "${0%/*}/.." && pwd)
install=1 build="$root/build-baremetal-host" work="" train="" finetune="" to_c="" model=cnn master=f32
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-install) install=0; shift ;;
    --model) model=$2; shift 2 ;;
    --master) master=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --tern-train) train=$2; shift 2 ;;
    --tern-finetune) finetune=$2; shift 2 ;;
    --model-to-c) to_c=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "baremetal-demo: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

have_tools() { command -v arm-none-eabi-g++ >/dev/null && command -v qemu-system-arm >/dev/null &&
               [[ -e /usr/lib/arm-none-eabi/newlib/libc.a || -d /usr/lib/arm-none-eabi/newlib ]]; }
if ! have_tools; then
  if [[ $install == 0 ]]; then
    echo "baremetal-demo: SKIP: arm-none-eabi toolchain or qemu-system-arm missing (scripts/install-deps.sh --baremetal)"
    exit 77
  fi
  "$root/scripts/install-deps.sh" --baremetal
fi
data_dir=/usr/share/datasets/fashion-mnist
if [[ ! -e $data_dir/train-images-idx3-ubyte.gz ]]; then
  echo "baremetal-demo: SKIP: Fashion-MNIST not in $data_dir (Debian: dataset-fashion-mnist)"
  exit 77
fi

if [[ -z $train || -z $finetune || -z $to_c ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$build" tern-train tern-finetune tern-model-to-c
  train=$build/examples/tern-train finetune=$build/examples/tern-finetune to_c=$build/ondevice/baremetal/tern-model-to-c
fi
case $model in
  cnn)  # every bias, a quarter of the second conv's channels and the head (tests/examples/finetune.sh's scheme)
    pretrain=(--epochs 1 --limit-train 12000) update="bias:all;weight:4=0.25" lr=0.05 ;;
  mcunet)  # bench/finetune_transfer.py's "sparse" row
    pretrain=(--epochs 1 --limit-train 12000)
    update="bias:all;weight:11=1,10.6=0.5,10.0=0.25,9.body.6=0.5,8.0=1,7.body.0=1,6.0=1,5.body.0=1,4.0=1,0=1" lr=0.03 ;;
  *) echo "baremetal-demo: --model must be cnn or mcunet, not '$model'" >&2; exit 2 ;;
esac
work=${work:-$build/baremetal-demo-$model}
rm -rf "$work/ckpt" && mkdir -p "$work"

# The host half: a short pretraining, int8 conversion with the new head (barely trained: the
# device does the fine-tuning), and the C++ source with the image in flash.
"$train" --model "$model" --classes 0-4 "${pretrain[@]}" --threads 2 --seed 1 \
  --checkpoint-dir "$work/ckpt" > "$work/train.log"
"$finetune" --checkpoint "$work/ckpt" --model "$model" --classes 5-9 --update bias --epochs 1 --limit-train 64 --lr 0.00001 \
  --limit-test 200 --show-plan=false --output "$work/model.tmodel" > "$work/finetune.log"
# The step the device runs: the sparse plan above (the new head always trains), 2 epochs over 200
# images at batch 1, the learning rate cosine to 0 as tern-finetune's default.
"$to_c" --model "$work/model.tmodel" --out "$work/demo_data.cpp" --classes 5-9 --train 200 --test 200 \
  --update "$update" --lr "$lr" --lr-schedule cosine --epochs 2 --master "$master"

make -s -C "$root/ondevice/baremetal" OUT="$work" DATA="$work/demo_data.cpp"

set +e
# Semihosting output reaches QEMU's stderr.
timeout 600 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -kernel "$work/tern-demo.elf" 2>&1 | tee "$work/qemu.log"
rc=${PIPESTATUS[0]}
set -e
fail() { echo "baremetal-demo: FAIL: $*" >&2; exit 1; }
[[ $rc == 124 ]] && fail "QEMU timed out"
[[ $rc == 0 ]] || fail "the device program exited with status $rc"
grep -q "check: ok" "$work/qemu.log" || fail "the model image did not pass its checksum"
# The device runs the same int8 kernels as the host: before training it must get the host's count.
host=$(sed -n 's/^host int8 accuracy on the same images: //p' "$work/qemu.log")
before=$(sed -n 's|^test accuracy before: \([0-9]*\)/.*|\1|p' "$work/qemu.log")
[[ -n $before && $before == "$host" ]] || fail "device accuracy before training ($before) differs from the host's ($host)"
# ... and trained with the same step on the same images, it must end where the host's run ended.
host_after=$(sed -n 's/^host accuracy after the same training: //p' "$work/qemu.log")
after=$(sed -n 's|^test accuracy after: \([0-9]*\)/.*|\1|p' "$work/qemu.log")
[[ -n $after && $after == "$host_after" ]] || fail "device accuracy after training ($after) differs from the host's ($host_after)"
grep -q "^tern-demo: ok" "$work/qemu.log" || fail "no 'tern-demo: ok'"
echo "baremetal-demo: PASS"
