#!/usr/bin/env bash
# Regenerates the README's screenshots of the web page (docs/screens/*.png):
# a real `swarm serve` with the scripted model, driven by headless Chromium
# (tests/screenshots.rs, ignored by a plain `cargo test`). Needs chromium
# and python3, as the browser tests do (.ci/run installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
SWARM_SCREENS="$PWD/docs/screens" cargo test --test screenshots -- --ignored --nocapture
