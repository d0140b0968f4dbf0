"""How the instruct stage's text loss divides among kinds of reply: per token, sqrt and per turn.

    python benchmarks/loss_shares.py --run runs/demo [--n 3000]

Draws the stage's first `--n` training conversations (the preset's mix, no images encoded) and
sums each reply's weight in the cross-entropy under `--text-loss token` (each target 1), `sqrt` (a
reply of n targets sqrt(n)) and `turn` (each reply 1): answers to questions (VQA and few-shot
episodes), captions, drawings (their layout text and the [IMG]/[/IMG] markup) and edits (the markup
alone). The [EOS] that closes a reply is its own line.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from vlgpt.core.presets import preset
from vlgpt.core.prompts import DESCRIBE
from vlgpt.data import sequences as S
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.instruct import InstructStage


def reply_kind(prompt: str) -> str:
    if DESCRIBE in prompt:
        return "caption"
    if prompt.startswith("Draw"):
        return "drawing"
    return "answer" if "?" in prompt else "edit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run with its codec stages (clip, tokenizer)")
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    stage = InstructStage(StageInputs(preset("small").model), run=Path(args.run), init_from=None)
    token, root, turn = Counter(), Counter(), Counter()
    for index in range(args.n):
        segments, _ = stage.sample(index)
        prompt, reply = "", Counter()
        for segment in segments + [S.text(S.USER)]:  # a closing user marker flushes the last reply
            if segment.kind == "text" and not segment.train:
                if reply:
                    total = sum(reply.values())
                    for key, count in reply.items():
                        token[key] += count
                        root[key] += count / total**0.5
                        turn[key] += count / total
                    reply = Counter()
                if segment.value not in (S.USER, S.ASSISTANT):
                    prompt = segment.value
            elif segment.train and segment.kind != "image":
                kind = reply_kind(prompt)
                if segment.kind == "eos":
                    reply[(kind, "[EOS]")] += 1
                else:
                    reply[(kind, "words")] += len(stage.tokenizer.encode(segment.value))
            elif segment.train:  # a drawn image: [IMG] and [/IMG] are text targets, its embeddings MSE
                reply[(reply_kind(prompt), "words")] += 2
    print(f"{'reply':10s} {'part':6s} {'per token':>10s} {'sqrt':>10s} {'per turn':>10s}")
    for key in sorted(token, key=lambda k: -token[k]):
        shares = [weights[key] / sum(weights.values()) for weights in (token, root, turn)]
        print(f"{key[0]:10s} {key[1]:6s}" + "".join(f"{share:11.3f}" for share in shares))


if __name__ == "__main__":
    main()
