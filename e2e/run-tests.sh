#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests that drive the real binaries.
# Needs root. Installs the Debian packages it needs if any is missing. Run from anywhere:
#   e2e/run-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=$(cat deploy/packages-runtime.txt deploy/packages-test.txt)
# shellcheck disable=SC2086
if ! dpkg -s $packages >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi
# The e2e tests exec the workspace's binaries: build them first.
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
