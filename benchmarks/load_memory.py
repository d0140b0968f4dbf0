"""Peak memory of loading a VL-GPT model folder: built with random weights then loaded (two copies),
against built with empty parameters and given the file's tensors (one copy; `vlgpt/core/devices.py`).

    python benchmarks/load_memory.py [--width 1024] [--depth 16]

Saves one transformer of that size (vocab 1024, 32 image embeddings of 128) to a temporary folder,
then loads it in a fresh process per way and reads every weight once. Reported above what the
process held after importing torch and vlgpt: peak RSS (MB, and in units of the weights' size),
and the final anonymous and file-mapped resident memory. safetensors maps the file, so weights
taken straight from it stay file-backed pages (shared with the page cache, evictable) rather than
a private copy. One JSON line per way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
import torch
from vlgpt.core.checkpoint import load_weights
from vlgpt.core.config import LanguageModelConfig
from vlgpt.core.devices import empty_parameters
from vlgpt.core.config import VLGPTConfig
from vlgpt.models.vlgpt import VLGPT

folder, way, width, depth = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = VLGPTConfig(1024, 32, 128, LanguageModelConfig(width=width, depth=depth, heads=8,
                                                        mlp_hidden=width * 8 // 3, max_seq_len=384))
def rss():
    lines = [line.split() for line in open("/proc/self/status") if line.startswith(("RssAnon", "RssFile"))]
    return {name.rstrip(":"): int(kb) / 1024 for name, kb, _ in lines}

before, base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss()
if way == "empty":
    with empty_parameters():
        model = VLGPT(config)
else:
    model = VLGPT(config)
model = load_weights(folder, model)
with torch.no_grad():  # read every weight once, so pages of a memory-mapped file count too
    total = sum(float(p.float().sum()) for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
after = rss()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"way": way, "weights_mb": round(weights / 2**20, 1),
                  "peak_above_imports_mb": round((peak - before) / 1024, 1),
                  "copies": round((peak - before) * 1024 / weights, 2),
                  "anon_mb": round(after["RssAnon"] - base["RssAnon"], 1),
                  "file_mapped_mb": round(after["RssFile"] - base["RssFile"], 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=16)
    args = parser.parse_args()
    import torch

    from vlgpt.core.checkpoint import save_model
    from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
    from vlgpt.models.vlgpt import VLGPT

    with tempfile.TemporaryDirectory() as tmp:
        lm = LanguageModelConfig(
            width=args.width, depth=args.depth, heads=8, mlp_hidden=args.width * 8 // 3, max_seq_len=384
        )
        with torch.no_grad():
            save_model(Path(tmp), VLGPT(VLGPTConfig(1024, 32, 128, lm)), {"kind": "vlgpt"})
        for way in ("eager", "empty"):
            result = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, way, str(args.width), str(args.depth)],
                capture_output=True,
                text=True,
                check=True,
            )
            print(result.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
