#!/usr/bin/env bash
# The test command: installs dependencies, builds the release preset and runs the whole suite under CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
ctest --preset release -j "$(nproc)" --timeout 1200
