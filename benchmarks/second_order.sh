#!/bin/bash
# First- and second-order MAML side by side, one after the other on one machine: the default experiment (elpv
# mono, 20 %, seed 0) with one refinement iteration, features from a shared cache (computed by the first run if
# absent). Prints wall time and peak memory of each; results.json of each under $OUT (default /tmp/second_order).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/second_order}
CACHE=${CACHE:-results/cache}
for fo in True False; do
  w=$OUT/first_order_$fo
  rm -rf "$w"
  mkdir -p "$OUT"
  /usr/bin/time -v python -m launch.main --config=configs/default.py:table --workdir="$w" --config.cache_dir="$CACHE" \
    --config.maml.first_order=$fo --config.refine.max_iterations=1 > "$OUT/log_$fo.txt" 2>&1
  echo "first_order=$fo exit $?"
  grep -E "Elapsed|Maximum resident" "$OUT/log_$fo.txt"
done
