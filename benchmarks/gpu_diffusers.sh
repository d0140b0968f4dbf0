#!/usr/bin/env bash
# The paper's decoder on a GPU (issue 42), as one prepared script for a lent device machine:
# the documented tiny-random chain (docs/custom-models.md, "Try it offline") trained on the CPU in
# seconds, then drawn through diffusers on $DEVICE in $DTYPE, and a 512 px drawing timed.
#
#   bash benchmarks/gpu_diffusers.sh                    # DEVICE=cuda DTYPE=bf16
#   DEVICE=cpu DTYPE=fp32 bash benchmarks/gpu_diffusers.sh   # the same script, checked without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
WORK=$(mktemp -d)
# The documented recipe, as written: its Python block builds models/tiny-sd, its commands train the chain.
$PY - "$WORK" <<'PYTHON'
import re, sys, os
from pathlib import Path
doc = Path("docs/custom-models.md").read_text().split("### Try it offline", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```(bash|python)\n(.*?)```", doc, flags=re.DOTALL)
Path(sys.argv[1], "build.py").write_text(blocks[0][1])
Path(sys.argv[1], "commands.sh").write_text(blocks[1][1])
PYTHON
ROOT=$PWD
(cd "$WORK" && "$ROOT/$PY" build.py && PATH="$(dirname "$ROOT/$PY"):$PATH" bash -e commands.sh) > "$OUT/chain.log" 2>&1
for seed in 1 1 2; do
  $PY -m vlgpt imagine "a red circle" --ckpt "$WORK/runs/sd" -o "$OUT/drawn-$seed-$RANDOM.png" \
    --steps 10 --guidance 3 --seed "$seed" --device "$DEVICE" --dtype "$DTYPE"
done
md5sum "$OUT"/drawn-*.png | tee "$OUT/drawn.md5"
$PY benchmarks/diffusers_drawing.py --sizes 64 512 --steps 10 25 50 --device "$DEVICE" --dtype "$DTYPE" \
  --json "$OUT/diffusers_drawing.json" | tail -8
