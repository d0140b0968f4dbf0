"""Generation speed: captions (KV cache) vs Hugging Face `generate` on the peer, text-to-image latency.

    python benchmarks/generate_speed.py [--preset small] [--threads 0] [--new-tokens 32] [--rounds 5]

Both models hold the same weights (`benchmarks/hf_peer.py`), run in fp32 as `vlgpt` serves, decode
greedily from the same prompt (User: [IMG] e_1..e_N [/IMG] Describe the image. Assistant:) and must
write the same tokens, which the script checks. The special tokens' rows of the LM head are zeroed so
that neither model stops early or starts an image: every caption is exactly --new-tokens long.
Timed: ours through `InterleavedGenerator.generate` (prompt building and text decoding included), the peer
through `LlamaForCausalLM.generate(inputs_embeds=...)` with the splice included. Calls alternate.

Figures: time to first token (a 1-token answer), decoding tokens/s after the first, a caption's
total time; text-to-image latency per image ([IMG], N regression steps, [/IMG], detokenizer and
pixel decoder); captions/s for a batch of prompts (ours with `InterleavedGenerator.text_batch` and one
after another with `generate`, the peer with batched `generate`; the batched answers are checked
equal too). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import caption_prompt, interleaved, load, machine, make_untrained_run, profile_split
from hf_peer import HFPeer, copy_weights

from vlgpt.core.config import VLGPTConfig
from vlgpt.core.prompts import t2i_prompt
from vlgpt.data import sequences as S
from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig
from vlgpt.inference.image_codec import ImageCodec
from vlgpt.models.vlgpt import VLGPT
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0: all cores)")
    parser.add_argument("--new-tokens", type=int, default=32, help="caption length in tokens")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="prompts in the batch-throughput figure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="vlgpt-bench-gen-") as tmp:
        model_config = make_untrained_run(Path(tmp), args.preset)
        codec = ImageCodec.load(tmp)
    tok = codec.text_tokenizer
    torch.manual_seed(0)
    model = VLGPT(VLGPTConfig(tok.vocab_size, codec.num_tokens, codec.token_dim, model_config.lm)).eval()
    with torch.no_grad():  # no early stop, no image: fixed-length captions on both sides
        for special in (tok.pad_id, tok.bos_id, tok.eos_id, tok.img_id, tok.img_end_id):
            model.transformer.lm_head.weight[special] = 0
    peer = HFPeer(model, {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}).eval()
    copy_weights(model, peer)
    generator = InterleavedGenerator(model, tok, codec)

    world = ShapesWorld("test", codec.image_size, codec.image_size)
    scenes = [world.scene(i) for i in range(args.batch)]
    embeddings = codec.encode([np.asarray(render(s)) for s in scenes])  # [B, N, d], batched
    prompts = [caption_prompt(e) for e in embeddings]
    built = [S.build(p, tok, codec.token_dim) for p in prompts]

    @torch.no_grad()
    def peer_generate(indices: list[int], new_tokens: int) -> torch.Tensor:
        batch = {k: torch.stack([built[i][k] for i in indices]) for k in ("ids", "image_embeds", "is_image")}
        x = peer.embed(batch["ids"], batch["image_embeds"], batch["is_image"])
        return peer.llm.generate(
            inputs_embeds=x,
            attention_mask=torch.ones(x.shape[:2], dtype=torch.long),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_id,
        )

    def ours_generate(index: int, new_tokens: int):
        return generator.generate(prompts[index], SamplingConfig(max_new_tokens=new_tokens))

    ours_text = ours_generate(0, args.new_tokens)
    peer_text = tok.decode(peer_generate([0], args.new_tokens)[0].tolist())
    if ours_text.text != peer_text or ours_text.completion_tokens != args.new_tokens:
        raise AssertionError(f"the peer wrote something else: {peer_text!r} vs ours {ours_text.text!r}")

    n = args.new_tokens
    first = interleaved(
        {"ours": lambda: ours_generate(0, 1), "peer": lambda: peer_generate([0], 1)}, args.rounds
    )
    full = interleaved(
        {"ours": lambda: ours_generate(0, n), "peer": lambda: peer_generate([0], n)}, args.rounds
    )
    result = {
        "benchmark": "generate_speed",
        "preset": args.preset,
        **machine(),
        "threads": torch.get_num_threads(),
        "dtype": "fp32",
        "prompt_positions": len(built[0]["ids"]),
        "new_tokens": n,
        "same_tokens": True,
    }
    for name in ("ours", "peer"):
        ttft, total = first[name]["median_s"], full[name]["median_s"]
        result[name] = {
            "ttft_ms": round(1000 * ttft, 2),
            "caption_ms": round(1000 * total, 1),
            "decode_tokens_per_s": round((n - 1) / (total - ttft), 1),
            "tokens_per_s": round(n / total, 1),
        }
    result["decode_speedup_vs_peer"] = round(
        result["ours"]["decode_tokens_per_s"] / result["peer"]["decode_tokens_per_s"], 3
    )
    result["caption_speedup_vs_peer"] = round(full["peer"]["time_vs_first"], 3)
    result["ttft_speedup_vs_peer"] = round(first["peer"]["time_vs_first"], 3)

    # Where a caption's time goes (self CPU time by kind; "other" is mostly per-op overhead at batch 1).
    result["profile_ms_per_caption"] = {
        "ours": profile_split(lambda: ours_generate(0, n)),
        "peer": profile_split(lambda: peer_generate([0], n)),
    }

    batch = list(range(args.batch))
    config = SamplingConfig(max_new_tokens=n)
    ours_batch = [o.text for o in generator.text_batch([prompts[i] for i in batch], config)]
    if ours_batch != [tok.decode(row.tolist()) for row in peer_generate(batch, n)]:
        raise AssertionError("batched captions differ from the peer's")
    throughput = interleaved(
        {
            "ours_batched": lambda: generator.text_batch([prompts[i] for i in batch], config),
            "ours_one_by_one": lambda: [ours_generate(i, n) for i in batch],
            "peer_batched": lambda: peer_generate(batch, n),
        },
        max(2, args.rounds // 2),
    )
    result["batch"] = {
        "prompts": args.batch,
        **{f"{name}_captions_per_s": round(args.batch / t["median_s"], 1) for name, t in throughput.items()},
        "ours_speedup": round(throughput["peer_batched"]["time_vs_first"], 3),
    }

    caption = "A red circle to the left of a blue square."
    t2i = [S.text(t2i_prompt(caption))]
    predicted = torch.randn(1, codec.num_tokens, codec.token_dim)
    images = interleaved(
        {
            "text_to_image": lambda: generator.generate(
                t2i, SamplingConfig(max_new_tokens=8), force_image=True, stop_after_image=True
            ),
            "decode_only": lambda: codec.decode(predicted),
        },
        args.rounds,
    )
    result["text_to_image"] = {
        "ms_per_image": round(1000 * images["text_to_image"]["median_s"], 1),
        "of_which_detokenize_and_draw_ms": round(1000 * images["decode_only"]["median_s"], 1),
        "positions_regressed": codec.num_tokens,
    }
    result["load_avg_1min"] = [load_before, load()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
