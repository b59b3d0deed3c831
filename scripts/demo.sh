#!/usr/bin/env bash
# Run the DiscVBR main job on the built-in phantom (sets up .venv on first use).
# Extra arguments go to `discvbr demo` (e.g. --3d, --subjects 30, --workers 2).
source "$(dirname "$0")/_env.sh"
exec .venv/bin/discvbr demo --out demo-output "$@"
