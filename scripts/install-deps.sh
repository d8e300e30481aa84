#!/usr/bin/env bash
# Install (idempotently) the Debian 12 packages apprentice needs to build, test and benchmark.
# Packages already installed are left alone; apt-get runs only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config        # toolchain
  libzmq3-dev                             # transport (ZeroMQ 4.3, CURVE via libsodium)
  libprotobuf-c-dev protobuf-c-compiler   # wire format, generated at build time
  libopenblas-dev                         # sgemm
  libev-dev                               # service event loops
  libsodium-dev                           # BLAKE2b weight digests, CURVE keys
  libcyaml-dev                            # YAML configs
  libjansson-dev                          # JSON: config.json, safetensors headers, metrics
  gnuplot-nox                             # apprentice plot
)
# Optional: the PyTorch comparison of bench/ (AP_WITH_TORCH=1 scripts/install-deps.sh).
if [ "${AP_WITH_TORCH:-0}" = 1 ]; then packages+=(python3-torch); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
