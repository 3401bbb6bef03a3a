#!/usr/bin/env bash
# `make cpu-check`: the numeric tests and the edge runtime's predictions under a second CPU profile,
# so that a result pinned to this host's CPU fails here before it fails on another machine of the
# same kind (AVX2-only hosts exist beside AVX-512 ones; docs/cpu-profiles.md). Steps:
#   1. the tests marked `numeric` with oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA): TensorFlow's
#      training and Keras references then take the AVX2 kernels an AVX2-only host takes
#   2. LiteRT (XNNPACK) and onnxruntime pick their kernels from CPUID, which no variable limits:
#      `edgecxr predict` over real test/ films under Debian's qemu-x86_64-static -cpu Haswell (AVX2,
#      no AVX-512), compared image by image with the same command run natively (pi_check's verdict)
# Emulation costs about 250 ms a film instead of 1 ms, so step 2 keeps to a few films.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BIN=${BIN:-$REPO/.venv/bin}
WORK=${CPU_CHECK_DIR:-$REPO/build/cpu-check}
DATA=${EDGECXR_DATA:-$REPO/../shared/data/chest_xray}
RUN=${CPU_CHECK_RUN:-$REPO/runs/demo}
FILMS_PER_CLASS=${CPU_CHECK_FILMS:-10}
start=$(date +%s)
say() { printf '[cpu-check %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

if ! command -v qemu-x86_64-static >/dev/null; then
    say "installing qemu-user-static"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi

say "1/2 numeric tests with ONEDNN_MAX_CPU_ISA=AVX2"
ONEDNN_MAX_CPU_ISA=AVX2 "$BIN/python" -m pytest -m numeric -n "${TEST_WORKERS:-auto}" --maxprocesses 4 -q -p no:cacheprovider

say "2/2 predictions natively and under qemu-x86_64 -cpu Haswell"
rm -rf "$WORK"
mkdir -p "$WORK"
for label in NORMAL PNEUMONIA; do
    mkdir -p "$WORK/films/$label"
    mapfile -t found < <(find "$DATA/test/$label" -maxdepth 1 -type f -name '*.jpeg' | sort)
    [ "${#found[@]}" -ge "$FILMS_PER_CLASS" ] || { echo "fewer than $FILMS_PER_CLASS films in $DATA/test/$label" >&2; exit 2; }
    cp "${found[@]:0:$FILMS_PER_CLASS}" "$WORK/films/$label/"
done
if [ ! -f "$RUN/export/model_int8.tflite" ] || [ ! -f "$RUN/export/model_fp32.onnx" ]; then
    # No converted run (make demo makes one): one epoch of the compact model on the real train/
    # films spreads its probabilities over [0, 1], unlike a tiny test model's.
    RUN=$WORK/run
    say "no converted run: training one epoch into $RUN"
    "$BIN/edgecxr" train --epochs 1 --out "$RUN" --data "$DATA" >"$WORK/train.log" 2>&1 || { tail -n 5 "$WORK/train.log"; exit 2; }
    "$BIN/edgecxr" convert "$RUN" --quantize int8 --no-verify --calibration-size 100 >"$WORK/convert.log" 2>&1 \
        || { tail -n 5 "$WORK/convert.log"; exit 2; }
fi
pairs=()
for model in model_int8.tflite model_fp32.onnx; do
    "$BIN/python" -P -m edgecxr.cli predict "$RUN/export/$model" "$WORK/films" --json >"$WORK/native-$model.jsonl" 2>"$WORK/native-$model.log"
    # -cpu Haswell: AVX2 and FMA, no AVX-512; TCG warns once per missing host feature.
    qemu-x86_64-static -cpu Haswell "$BIN/python" -P -m edgecxr.cli predict "$RUN/export/$model" "$WORK/films" \
        --json >"$WORK/haswell-$model.jsonl" 2> >(grep -v "TCG doesn't support" >"$WORK/haswell-$model.log")
    pairs+=("$model" "$RUN/export/$model" "$WORK/native-$model.jsonl" "$WORK/haswell-$model.jsonl")
done
set +e
"$BIN/python" -P tools/agreement.py --other haswell "${pairs[@]}" | tee "$WORK/agreement.md"
status=${PIPESTATUS[0]}
say "done (exit $status)"
exit "$status"
