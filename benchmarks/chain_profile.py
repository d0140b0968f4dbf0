"""Time the pieces of one decoder-stage (end-to-end chain) training step on a run with clip and tokenizer.

python benchmarks/chain_profile.py RUN [BATCH]
"""

import sys
import time
from pathlib import Path

import torch

from vlgpt.core.presets import preset
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.decoder import DecoderStage

run = Path(sys.argv[1])
B = int(sys.argv[2]) if len(sys.argv) > 2 else 16
cfg = preset("small").model
st = DecoderStage(StageInputs(cfg, "world", 0, 32), clip_dir=run, pair_dir=run)
chain = st.chain
chain.train()
opt = torch.optim.AdamW([p for p in chain.parameters() if p.requires_grad], lr=1e-4)


def t(f, n=10):
    f()
    s = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - s) / n * 1000


pixels, caps, _ = st.raw_batch(0, B)
print("data (raw_batch) ms", t(lambda: st.raw_batch(0, B)))
print("targets (frozen clip img+txt) ms", t(lambda: st.targets(pixels, caps)))
with torch.no_grad():
    print("  frozen vit fwd ms", t(lambda: st.clip.image_features(pixels)))
    print("  frozen text fwd ms", t(lambda: st.clip.embed_captions(caps, st.text_tokenizer)))
b = st.targets(pixels, caps)


def step():
    loss, _ = chain(b["pixels"], None, b["e_v"], b["e_t"])
    opt.zero_grad()
    loss.backward()
    opt.step()


print("chain fwd+bwd+opt ms", t(step))


def part(fn):
    def g():
        out = fn()
        out.float().pow(2).mean().backward()

    return g


print("  vit fwd+bwd ms", t(part(lambda: chain.vision(pixels))))
feats = chain.vision(pixels).detach()
print("  tokenizer fwd+bwd ms", t(part(lambda: chain.pair.tokenizer(feats))))
tok = chain.pair.tokenizer(feats).detach()
print("  detok fwd+bwd ms", t(part(lambda: chain.pair.detokenizer(tok)[0])))
zv, zt = [x.detach() for x in chain.pair.detokenizer(tok)]
print("  decoder fwd+bwd ms", t(part(lambda: chain.decoder.pixel_loss(chain.decoder(zv, zt), pixels)[0])))
print("  decoder fwd ms", t(lambda: chain.decoder(zv, zt)))
