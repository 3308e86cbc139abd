#!/usr/bin/env bash
# Every benchmark at its default size, one after the other (never two at once: they measure the machine).
#   bench/run_all.sh [python]        e.g. bench/run_all.sh /tmp/venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python}"
"$PY" bench/detection_core.py
"$PY" bench/end_to_end.py
"$PY" bench/latency.py
"$PY" bench/state.py
"$PY" bench/state_cache.py
"$PY" bench/scale_out.py
"$PY" bench/failover.py
"$PY" bench/console_queue.py
