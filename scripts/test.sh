#!/usr/bin/env bash
# Set up a fresh Debian 12 machine and run the whole test suite:
#   1. install missing packages, 2. Release build + every CTest,
#   3. an address/undefined-sanitizer build running the tests that feed bad input.
# Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="$(nproc)"
scripts/build.sh
(cd build && ctest --output-on-failure -j "$jobs" "$@")
# Bad-input tests again under ASan/UBSan: an error, never a crash.
sanitize_tests='safetensors|malformed|tokenizer|dataset|config|decode|protocol|weights|sft|eval|sample|teacher|learner_batch|objectives_edge|loss'
AP_BUILD_DIR=build-sanitize scripts/build.sh -DAP_SANITIZE=address,undefined -DAP_NATIVE=ON
(cd build-sanitize && ctest --output-on-failure -j "$jobs" -R "$sanitize_tests")
echo "test.sh: all tests passed"
