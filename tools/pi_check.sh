#!/usr/bin/env bash
# `make pi-check`: the offline bundle on an emulated Raspberry Pi OS 64-bit (Debian bookworm arm64,
# Python 3.11, glibc 2.36), built from Debian's packages with debootstrap and run under
# qemu-user-static through binfmt. Needs root. Steps:
#   1. apt: debootstrap, qemu-user-static, binfmt-support; binfmt_misc mounted, qemu-aarch64 enabled
#   2. in the background: the arm64 root filesystem (python3, python3-venv from bookworm)
#   3. meanwhile on this machine: a real compact model (1 epoch on train/, int8 TFLite + fp32 ONNX),
#      two aarch64 bundles (LiteRT + onnxruntime; tflite-runtime 2.14 + numpy<2), x86 predictions
#      over 50 real test/ images (tflite-runtime's from an x86_64 bundle installed with no network)
#   4. inside the root filesystem with no network (unshare -n): install.sh of each bundle, then
#      edgecxr predict over the same images
#   5. tools/agreement.py: the agreement table; exit 1 if a label or probability differs
# Pitfalls (issue 20): qemu's default CPU makes LiteRT's int8 kernels silently wrong, so a real Pi
# core is pinned (QEMU_CPU, passed into every chroot); onnxruntime crashes on the host's x86
# /proc/cpuinfo, so an arm64 one is bind-mounted over it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BIN=${BIN:-$REPO/.venv/bin}
WORK=${PI_CHECK_DIR:-$REPO/build/pi-check}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}   # Raspberry Pi 4; cortex-a76 for a Pi 5
DATA=${EDGECXR_DATA:-$REPO/../shared/data/chest_xray}
IMAGES_PER_CLASS=${PI_CHECK_IMAGES:-25}
# The Debian mirror this machine's apt uses (deb822 or one-line sources).
MIRROR=${PI_CHECK_MIRROR:-$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | head -n1 | tr -d ' ' || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOT=$WORK/root
start=$(date +%s)
say() { printf '[pi-check %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

[ "$(id -u)" = 0 ] || { echo "pi-check needs root (debootstrap, chroot, binfmt)" >&2; exit 2; }

say "1/5 apt packages and binfmt (QEMU_CPU=$QEMU_CPU, mirror $MIRROR)"
missing=""
for package in debootstrap qemu-user-static binfmt-support; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "qemu-aarch64 binfmt is not enabled" >&2; exit 2; }

cleanup() {
    for mount in "$ROOT/proc/cpuinfo" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"; do
        mountpoint -q "$mount" 2>/dev/null && umount -l "$mount"
    done
    return 0
}
trap cleanup EXIT
cleanup
# Never remove a folder that still has /dev or /proc mounted inside it.
if findmnt -rno TARGET | grep "^$WORK/" >/dev/null; then
    echo "pi-check: something is still mounted under $WORK; unmount it first" >&2
    exit 2
fi
rm -rf "$WORK"
mkdir -p "$WORK/images" "$WORK/x86" "$WORK/arm64"

say "2/5 debootstrap bookworm arm64 in the background (log: $WORK/debootstrap.log)"
nice -n 19 debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv \
    bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 &
debootstrap_pid=$!

say "3/5 model, bundles and x86 predictions on this machine"
for label in NORMAL PNEUMONIA; do
    mkdir -p "$WORK/images/$label"
    # The first N by name (a list, not `| head`: pipefail would take head's early exit as a failure).
    mapfile -t found < <(find "$DATA/test/$label" -maxdepth 1 -type f -name '*.jpeg' | sort)
    [ "${#found[@]}" -ge "$IMAGES_PER_CLASS" ] || { echo "fewer than $IMAGES_PER_CLASS images in $DATA/test/$label" >&2; exit 2; }
    cp "${found[@]:0:$IMAGES_PER_CLASS}" "$WORK/images/$label/"
done
if [ -n "${PI_CHECK_RUN:-}" ]; then
    run=$PI_CHECK_RUN   # a trained, converted run (its export/ needs model_int8.tflite and model_fp32.onnx)
else
    # CI has no trained run: one epoch of the compact model on the real train/ images (about a
    # minute) gives a real model whose probabilities spread over [0, 1], unlike a tiny model's.
    run=$WORK/run
    nice -n 19 "$BIN/edgecxr" train --epochs 1 --out "$run" --data "$DATA" >"$WORK/train.log" 2>&1 \
        || { tail -n 5 "$WORK/train.log"; exit 2; }
    # Not verified against Keras (that is convert's job, in `make test`): pi-check asks only
    # whether arm64 runs the same file as x86.
    nice -n 19 "$BIN/edgecxr" convert "$run" --quantize int8 --no-verify --calibration-size 100 >"$WORK/convert.log" 2>&1 \
        || { tail -n 5 "$WORK/convert.log"; exit 2; }
fi
"$BIN/edgecxr" bundle "$run" --formats tflite-int8,onnx-fp32 --platform aarch64 --python 3.11 --out "$WORK/bundles"
"$BIN/edgecxr" bundle "$run" --formats tflite-int8 --tflite-runtime tflite-runtime --platform aarch64 \
    --python 3.11 --out "$WORK/bundles"
for model in model_int8.tflite model_fp32.onnx; do
    "$BIN/edgecxr" predict "$run/export/$model" "$WORK/images" --json >"$WORK/x86/$model.jsonl" 2>"$WORK/x86/$model.log"
done
# tflite-runtime 2.14 rounds some int8 outputs differently from LiteRT (up to two steps, measured on
# x86 alone), so its x86 reference is tflite-runtime too: an x86_64 bundle, installed here the
# same way, with no network.
"$BIN/edgecxr" bundle "$run" --formats tflite-int8 --tflite-runtime tflite-runtime --platform x86_64 \
    --python 3.11 --out "$WORK/bundles-x86"
mkdir -p "$WORK/x86-bundle"
tar -xzf "$WORK"/bundles-x86/*.tar.gz -C "$WORK/x86-bundle"
unshare -n sh "$WORK"/x86-bundle/*/install.sh --prefix "$WORK/x86-tflite-runtime" --no-service >"$WORK/x86/install.log" 2>&1 \
    || { tail -n 20 "$WORK/x86/install.log"; echo "the x86_64 bundle did not install" >&2; exit 1; }
"$WORK/x86-tflite-runtime/venv/bin/edgecxr" predict "$WORK/x86-tflite-runtime/models/model_int8.tflite" "$WORK/images" \
    --json >"$WORK/x86/tflite-runtime-model_int8.tflite.jsonl" 2>"$WORK/x86/tflite-runtime.log"

say "waiting for debootstrap"
wait "$debootstrap_pid" || { tail -n 20 "$WORK/debootstrap.log"; echo "debootstrap failed" >&2; exit 2; }

say "4/5 install each bundle in the arm64 root with no network, then predict"
# An arm64 /proc/cpuinfo (Raspberry Pi 4: 4 x Cortex-A72): onnxruntime parses it at import.
for core in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$core"
done >"$WORK/cpuinfo"
printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >>"$WORK/cpuinfo"
mount -t proc proc "$ROOT/proc"
mount --bind "$WORK/cpuinfo" "$ROOT/proc/cpuinfo"
# onnxruntime's cpuinfo also reads the CPU lists in /sys (only its warnings without them).
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mkdir -p "$ROOT/pi-check"
cp -r "$WORK/images" "$ROOT/pi-check/"
# Every command inside: no network, a clean environment that still carries QEMU_CPU to qemu.
inside() {
    unshare -n chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$QEMU_CPU" HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"
}
[ "$(inside uname -m)" = aarch64 ] || { echo "the root filesystem does not run as aarch64" >&2; exit 2; }
say "arm64 root: $(inside python3 -c 'import platform; print(platform.machine(), "Python", platform.python_version(), "glibc", platform.libc_ver()[1])')"
for archive in "$WORK"/bundles/*.tar.gz; do
    name=$(basename "$archive" .tar.gz)
    variant=litert; case "$name" in *-tflite-runtime) variant=tflite-runtime ;; esac
    tar -xzf "$archive" -C "$ROOT/pi-check"
    say "install.sh of $name"
    if ! inside sh "/pi-check/$name/install.sh" --prefix "/opt/edgecxr-$variant" 2>&1 | sed 's/^/    /'; then
        echo "install.sh failed for $name" >&2
        exit 1
    fi
    for model in $(cd "$ROOT/pi-check/$name/models" && ls | grep -v '\.json$'); do
        inside "/opt/edgecxr-$variant/venv/bin/edgecxr" predict "/opt/edgecxr-$variant/models/$model" \
            /pi-check/images --json >"$WORK/arm64/$variant-$model.jsonl" 2>"$WORK/arm64/$variant-$model.log"
    done
done

set +e
say "5/5 arm64 (qemu $QEMU_CPU) against x86_64, image by image"
"$BIN/python" -P tools/agreement.py \
    "LiteRT int8 TFLite" "$run/export/model_int8.tflite" "$WORK/x86/model_int8.tflite.jsonl" "$WORK/arm64/litert-model_int8.tflite.jsonl" \
    "tflite-runtime 2.14 int8 TFLite" "$run/export/model_int8.tflite" "$WORK/x86/tflite-runtime-model_int8.tflite.jsonl" "$WORK/arm64/tflite-runtime-model_int8.tflite.jsonl" \
    "onnxruntime fp32 ONNX" "$run/export/model_fp32.onnx" "$WORK/x86/model_fp32.onnx.jsonl" "$WORK/arm64/litert-model_fp32.onnx.jsonl" \
    | tee "$WORK/agreement.md"
status=${PIPESTATUS[0]}
say "done (exit $status)"
exit "$status"
