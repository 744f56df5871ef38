#!/usr/bin/env bash
# The speed checks of README "Speed", in one go on one GPU machine (not part of CI: CI has no GPU).
# Usage: OUT=gpu_out bash .ci/gpu_bench.sh     Writes a log and a JSON per step into $OUT; every step has its own
# time limit so that a slow one cannot eat the others' time.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $?"
    grep -v "it/s\]" "$OUT/$name.log" | tail -n 14
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
B="--teacher regnety_160 --batch-size 256"
step train_eager 150 $PY -m minideit.benchmark train --model deit_tiny_distilled_patch16_224 \
    deit_small_distilled_patch16_224 deit_base_distilled_patch16_224 $B --json "$OUT/train_eager.json"
step model_bf16 60 $PY -m minideit.benchmark model --model deit_tiny_patch16_224 deit_small_patch16_224 \
    deit_base_patch16_224 --amp bf16 --batch-size 256 --json "$OUT/model_bf16.json"
step loader 60 $PY -m minideit.benchmark loader --workers 16 --gpu-aug --batch-size 256 --json "$OUT/loader.json"
step demo 90 $PY -m minideit.train --demo --output-dir "$OUT/demo_run"
rm -rf "$OUT/demo_run"/*.pth
step train_compile_s 150 $PY -m minideit.benchmark train --model deit_small_distilled_patch16_224 $B --compile \
    --json "$OUT/train_compile_s.json"
step train_compile_b 150 $PY -m minideit.benchmark train --model deit_base_distilled_patch16_224 $B --compile \
    --json "$OUT/train_compile_b.json"
