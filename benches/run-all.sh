#!/usr/bin/env bash
# Runs every benchmark with its baseline, in one go. Expects a release build (make bench).
# IDLE_SECONDS shortens the idle run (default 600).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
cargo bench --locked --bench state_read
python3 benches/storm.py
bash benches/idle.sh "${IDLE_SECONDS:-600}"
python3 benches/push_pull.py
BACKEND=aws python3 benches/push_pull.py
python3 benches/aws_idle.py "${IDLE_SECONDS:-600}"
python3 benches/mirror.py
python3 benches/webhooks.py
python3 benches/deploy.py
python3 benches/partition.py
bash benches/fast_forward.sh
python3 benches/workspace.py
