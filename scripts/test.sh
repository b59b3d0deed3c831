#!/usr/bin/env bash
# Run the whole DiscVBR test suite (sets up .venv on first use). Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh" test
exec .venv/bin/python -m pytest Testing "$@"
