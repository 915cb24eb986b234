#!/bin/sh
# Fuzz the request decoder and reply packers for SECONDS (default 60).
# Builds into build-fuzz/ with libFuzzer, ASan and UBSan; exits non-zero on a
# crash, a leak or a sanitizer report, and prints one result line.
set -eu
seconds=${1:-60}
cd "$(dirname "$0")/../.."
out=build-fuzz
mkdir -p "$out/corpus"

clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror -Wno-unused-parameter -I. -D_GNU_SOURCE $(pkg-config --cflags msgpack) \
  tests/fuzz/fuzz_request.c core/mp.c core/proto.c core/proto_gen.c core/err.c core/log.c \
  core/fsutil.c -o "$out/fuzz_request" $(pkg-config --libs msgpack)

/usr/bin/python3 tests/fuzz/seeds.py "$out/corpus" "$out/request.dict"

rc=0
"$out/fuzz_request" -max_total_time="$seconds" -dict="$out/request.dict" \
  -artifact_prefix="$out/" -print_final_stats=1 -max_len=4096 "$out/corpus" \
  >"$out/fuzz.log" 2>&1 || rc=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz.log")
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/fuzz.log")
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$out/fuzz.log")
corpus=$(ls "$out/corpus" | wc -l)
if [ "$rc" -eq 0 ]; then
  echo "fuzz: ${runs:-?} runs in ${seconds}s, ${speed:-?} exec/s, corpus $corpus, peak rss ${rss:-?} MB, crash: none"
else
  echo "fuzz: FAILED (exit $rc) after ${runs:-?} runs; see $out/fuzz.log:"
  grep -E 'ERROR|SUMMARY|artifact' "$out/fuzz.log" | head -5
fi
exit "$rc"
