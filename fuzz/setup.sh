#!/usr/bin/env bash
# fuzz/setup.sh: install what the fuzz targets need on Debian 12: the project's build dependencies
# (scripts/setup.sh) plus clang 14 with its libFuzzer/sanitizer runtimes and its OpenMP runtime.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"

packages=(clang-14 libclang-rt-14-dev libomp-14-dev)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "fuzz/setup.sh: ${packages[*]} already installed"
  exit 0
fi
echo "fuzz/setup.sh: installing ${missing[*]}"
as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
