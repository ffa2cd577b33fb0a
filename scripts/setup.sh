#!/usr/bin/env bash
# scripts/setup.sh [--peer]: install the Debian packages simmim needs to build and test.
#   --peer  also install python3-torch, python3-numpy, python3-matplotlib and OpenBLAS (PyTorch peer scripts,
#           fixture generation, plots; without OpenBLAS torch falls back to the slow reference BLAS)
# Idempotent: does nothing (no apt-get update) when every package is already installed.
# Runs apt-get as root, through sudo when not root; without sudo it lists the packages and fails.
set -euo pipefail

packages=(build-essential cmake libeigen3-dev libxsimd-dev catch2 libbenchmark-dev nlohmann-json3-dev
          libcli11-dev libfmt-dev libstb-dev zlib1g-dev libjpeg62-turbo-dev libpng-dev
          libopenmpi-dev openmpi-bin dataset-fashion-mnist)
peer_packages=(python3-torch python3-numpy python3-matplotlib libopenblas0-pthread)

for arg in "$@"; do
  case "$arg" in
    --peer) packages+=("${peer_packages[@]}") ;;
    -h|--help) sed -n '2,5s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --peer or --help)" >&2; exit 2 ;;
  esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup.sh: dpkg-query not found: this script supports Debian (12) and derivatives only." >&2
  echo "Install the equivalents of: ${packages[*]}" >&2
  exit 1
fi

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$package")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup.sh: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "setup.sh: installing ${missing[*]}"

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: not root and sudo is not available; as root, run:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
