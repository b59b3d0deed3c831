#!/usr/bin/env bash
# Run the DiscVBR main job on the built-in phantom (sets up .venv on first use).
# Extra arguments go to `discvbr phantom`; the default output folder is ./demo-output.
source "$(dirname "$0")/_env.sh"
exec .venv/bin/discvbr phantom --out demo-output --subjects 20 --seed 1 "$@"
