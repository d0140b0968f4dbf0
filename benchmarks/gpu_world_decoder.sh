#!/usr/bin/env bash
# The world decoder at a GPU's budget (issue 43), as one prepared script for a lent device machine:
# the two stages of `vlgpt train vae` / `vlgpt train diffusion` with the small preset's recipe, more
# samples, and attention at every UNet level (the probe that learnt text soonest per sample,
# docs/BENCHMARKS.md, "The world's own decoder"); then the decoder alone evaluated, its curve
# printed, and the folder shipped to $OUT/world-decoder with its card, ready to copy into
# pretrained/world-decoder/.
#
#   bash benchmarks/gpu_world_decoder.sh                       # DEVICE=cuda PRECISION=bf16, ~10 min on an H100
#   DEVICE=cpu PRECISION=fp32 PRESET=tiny VAE_STEPS=4 STEPS=4 EVAL_EVERY=2 N=2 SCENES=4 ATTENTION=1,1 \
#     bash benchmarks/gpu_world_decoder.sh                     # the same script, checked without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
PRESET=${PRESET:-small}
VAE_STEPS=${VAE_STEPS:-2000}
STEPS=${STEPS:-12000}
BATCH=${BATCH:-128}
EVAL_EVERY=${EVAL_EVERY:-3000}
ATTENTION=${ATTENTION:-1,1,1}  # one entry per UNet level (the tiny preset has two)
N=${N:-50}
SCENES=${SCENES:-300}
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
RUN="$OUT/run"
mkdir -p "$OUT"
$PY -m vlgpt train vae --out "$RUN" --preset "$PRESET" --steps "$VAE_STEPS" --lr 2e-3 \
  --device "$DEVICE" --precision "$PRECISION" 2>&1 | tr '\r' '\n' | grep -v "step/s\|s/step" | tail -12
$PY -m vlgpt train diffusion --out "$RUN" --preset "$PRESET" --steps "$STEPS" --batch-size "$BATCH" \
  --eval-every "$EVAL_EVERY" --device "$DEVICE" --precision "$PRECISION" --set "diffusion.attention=$ATTENTION" \
  2>&1 | tr '\r' '\n' | grep -v "step/s\|s/step" | tail -25
$PY benchmarks/world_decoder.py "$RUN/diffusion/model" --n "$N" --scenes "$SCENES" --device "$DEVICE" \
  --curve "$RUN" --json "$OUT/world_decoder.json"
$PY benchmarks/ship_world_decoder.py "$RUN" "$OUT/world-decoder" --figures "$OUT/world_decoder.json"
echo "shipped: $OUT/world-decoder"
