#!/usr/bin/env bash
# Installs every Debian package dsv3 needs to build, test and benchmark. Idempotent: packages already
# present are skipped without touching the network.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  libdnnl-dev libopenblas-openmp-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libonig-dev libicu-dev
  python3-torch python3-numpy python3-jinja2 util-linux
  nodejs
  bible-kjv fortunes fortunes-min fortunes-zh manpages-zh groff-base
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
# Debian's nodejs ships npm as a separate package (other Node.js builds bundle it).
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
fi
