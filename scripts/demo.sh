#!/usr/bin/env bash
# The main job from a fresh clone: set up, then `pushforward demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The plot extra (matplotlib) lets the demo draw its figures into report.html.
bash scripts/setup.sh plot
exec .venv/bin/pushforward demo "$@"
