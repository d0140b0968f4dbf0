"""Fast evaluation during training: caption F1, VQA accuracy and text-to-image on a few val rows."""

from __future__ import annotations

import numpy as np

from ..core.prompts import DESCRIBE, draw_prompt, t2i_prompt
from ..data import sequences as S
from ..inference.generate import InterleavedGenerator, SamplingConfig
from ..world.judge import judge
from ..world.language import caption_attribute_scores
from ..world.render import render
from ..world.scene import Scene
from .geneval import make_prompts, score_prompt
from .text_metrics import normalize_vqa_answer


def quick_eval(stage, n: int = 20) -> dict:
    generator = InterleavedGenerator(stage.model, stage.tokenizer, stage.codec)
    rows = [stage.val_world[i] for i in range(n)]
    scenes = [Scene.from_dict(r["scene"]) for r in rows]
    embeddings = stage.codec.encode([np.asarray(render(s)) for s in scenes])
    chat = stage.name == "instruct"
    f1, vqa, t2i = [], [], []
    for index, (row, scene, emb) in enumerate(zip(rows, scenes, embeddings)):
        if chat:
            segments = S.chat_segments(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DESCRIBE}]}],
                [emb],
                False,
                True,
            )
        else:
            segments = [S.image(emb)]
        caption = generator.generate(segments, SamplingConfig(max_new_tokens=40)).text
        f1.append(caption_attribute_scores(caption, scene)["f1"])
        if chat and row["questions"]:
            qa = row["questions"][index % len(row["questions"])]  # every kind, not colour alone
            segments = S.chat_segments(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qa["question"]}]}],
                [emb],
                False,
                True,
            )
            answer = generator.generate(segments, SamplingConfig(max_new_tokens=8)).text
            vqa.append(float(normalize_vqa_answer(answer) == normalize_vqa_answer(qa["answer"])))
    for prompt in make_prompts(
        n_per_category=max(1, n // 6), width=stage.codec.image_size, height=stage.codec.image_size
    )[:n]:
        text = prompt.description
        if chat:
            segments = S.chat_segments(
                [{"role": "user", "content": [{"type": "text", "text": draw_prompt(text)}]}], [], False, True
            )
        else:
            segments = [S.text(t2i_prompt(text))]
        image = generator.generate(
            segments, SamplingConfig(), require_image=True, stop_after_image=True
        ).images[0]
        t2i.append(score_prompt(prompt, judge(image)))
    result = {"caption_f1": float(np.mean(f1)), "t2i": float(np.mean(t2i))}
    if vqa:
        result["vqa"] = float(np.mean(vqa))
    return result
