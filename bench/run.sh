#!/usr/bin/env bash
# Run the benchmarks. Installs wrk and nginx (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
fi
.venv/bin/python -m bench.throughput "$@"
