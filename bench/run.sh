#!/usr/bin/env bash
# Run the benchmarks. Installs wrk, nginx and a C compiler (for bench/loadgen.c, the Unix
# socket load generator) from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v cc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light gcc libc6-dev
fi
.venv/bin/python -m bench.throughput "$@"
