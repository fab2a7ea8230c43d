#!/usr/bin/env bash
# Installs the Debian packages Tern needs, skipping those already present.
# Usage: scripts/install-deps.sh [--bench] [--baremetal]   (--bench adds PyTorch and OpenBLAS, the peers bench/ compares with, and iproute2 for link shaping;
#   --baremetal adds the Cortex-M cross compiler, newlib and QEMU for ondevice/baremetal; large, so not in the default list)
# Works as root or through sudo; safe to run again.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache make pkg-config
  libdnnl-dev                       # CPU GEMM and convolution (see shared ARCHITECTURE.md)
  protobuf-compiler libprotobuf-dev # checkpoints, configs, event files
  libboost-dev                      # Asio for the TCP backend and launcher
  libgtest-dev libgmock-dev         # unit tests
  openmpi-bin libopenmpi-dev        # mpi backend, mpirun
  zlib1g-dev                        # gzip IDX files
  dataset-fashion-mnist             # real data for training and the demo
  fortunes                          # English text for gpt-tiny's character-level data (tern-gpt)
  python3                           # bench/*.py drivers, some whole-program tests
)

for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(python3-torch libopenblas0-pthread iproute2) ;;  # iproute2: compress_link.py's tc
    --baremetal) packages+=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm) ;;  # scripts/baremetal-demo.sh
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
