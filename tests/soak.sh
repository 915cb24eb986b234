#!/bin/sh
# make soak: mixed traffic with daemon restarts for SOAK_S seconds
# (default 180); see tests/soak.py.  Runs against $BUILD (default build).
set -u
cd "$(dirname "$0")/.." || exit 1
export ZCD_BUILD="${BUILD:-build}"
export SOAK_S="${SOAK_S:-180}"
exec timeout $((${SOAK_S%.*} + 300)) /usr/bin/python3 tests/soak.py
