#!/usr/bin/env bash
# The main job from a fresh clone: set up, then `pushforward demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pushforward demo "$@"
