#!/usr/bin/env bash
# Reproduce the README's benchmark figures from scratch on this machine:
#   train the compact model (defaults, real data) -> evaluate on test/ -> convert --quantize all -> bench
# and copy the results (bench.json, bench.md, PNGs, test metrics, how they were made) to benchmarks/results/.
#
# Run it on a quiet machine: other processes inflate latencies (bench flags wide spreads with ⚠).
# Every setting can be overridden from the environment, e.g. a smoke test:
#   DATA=/tmp/tiny RUN=/tmp/run RESULTS=/tmp/results TRAIN_ARGS="--epochs 1" BENCH_ARGS="--repeats 5" benchmarks/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
DATA=${DATA:-${EDGECXR_DATA:-../shared/data/chest_xray}}
RUN=${RUN:-runs/reproduce}
RESULTS=${RESULTS:-benchmarks/results}
THREADS=${THREADS:-1,2}
BATCH_SIZES=${BATCH_SIZES:-1,8}
TRAIN_ARGS=${TRAIN_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

steps=(
  "$BIN/edgecxr train --data $DATA --out $RUN --overwrite $TRAIN_ARGS"
  "$BIN/edgecxr evaluate $RUN --data $DATA --json $RUN/test_metrics.json"
  "$BIN/edgecxr convert $RUN --quantize all"
  "$BIN/edgecxr bench $RUN --data $DATA --device cpu --threads $THREADS --batch-sizes $BATCH_SIZES $BENCH_ARGS"
)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for step in "${steps[@]}"; do
  echo "+ $step" >&2
  if [[ $step == *" convert "* ]]; then
    # An artifact that fails verification is not fatal here: bench reports it as a row with its reason.
    $step || echo "convert reported failures; the bench table lists them" >&2
  else
    $step
  fi
done

mkdir -p "$RESULTS"
cp "$RUN"/bench/bench.json "$RUN"/bench/bench.md "$RUN"/bench/*.png "$RUN"/test_metrics.json "$RESULTS"/
[[ -f $RUN/export/verify.json ]] && cp "$RUN"/export/verify.json "$RESULTS"/
{
  echo "# How benchmarks/results/ was made"
  echo
  echo "- started: $started, finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- git commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- machine: $(uname -srm); CPU and library versions are in bench.json under \"machine\""
  echo "- commands:"
  for step in "${steps[@]}"; do echo "  - \`${step#"$BIN"/}\`"; done
} > "$RESULTS/REPRODUCE.md"
echo "results copied to $RESULTS/" >&2
