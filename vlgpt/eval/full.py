"""`vlgpt eval all`: everything VL-GPT does, scored on the Shapes test split.

Captioning (attribute F1 + BLEU-4/CIDEr/ROUGE-L, and CHAIR), VQA, POPE (yes/no probes for objects
present and absent, beside "always yes" and "always no"), text-to-image in GenEval's categories (with
a strict score that allows no extra objects, and the floor random noise earns on the same meter),
editing (and how often a possible edit is declined), edits that cannot be made (how often they are
declined), the compositional split's text-to-image, and few-shot accuracy at k = 0, 2, 4 on a task
whose labels exist only in the demonstrations. Each figure comes with n and a bootstrap 95% CI.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from ..core.prompts import draw_prompt
from ..inference.pipeline import Pipeline
from ..world.dataset import ShapesWorld
from ..world.judge import judge
from ..world.render import render
from ..world.scene import Scene
from .geneval import evaluate_t2i, make_prompts, noise_floor
from .hallucination import SAMPLERS, evaluate_pope
from .text_metrics import normalize_vqa_answer, summarize
from .world_eval import evaluate_captions, evaluate_edits, evaluate_impossible_edits, evaluate_vqa

POPE_TRAINING_SCENES = 2000  # what the popular and adversarial samplers count objects in


def few_shot(model: Pipeline, world: ShapesWorld, k: int, n: int, **text) -> dict:
    scores = []
    for i in range(n):
        episode = world.episode(i, k)
        messages, images = [], []
        for demo in episode["demos"]:
            images.append(render(Scene.from_dict(demo["scene"])))
            messages += [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": images[-1]},
                        {"type": "text", "text": episode["prompt"]},
                    ],
                },
                {"role": "assistant", "content": demo["answer"]},
            ]
        query = render(Scene.from_dict(episode["query"]))
        messages.append(
            {
                "role": "user",
                "content": [{"type": "image", "image": query}, {"type": "text", "text": episode["prompt"]}],
            }
        )
        answer = model.chat(messages, max_new_tokens=6, **text).text
        scores.append(float(normalize_vqa_answer(answer) == normalize_vqa_answer(episode["answer"])))
    return summarize(scores)


def evaluate_all(
    model: Pipeline, n: int = 100, progress: bool = True, text: dict | None = None, **drawing
) -> dict:
    """Every task on n Shapes test rows. `text`: SamplingConfig fields for captions and answers (e.g.
    contrastive decoding); `drawing`: those for the drawings (a diffusion decoder's `steps` and
    `guidance`, the image head's `head_guidance`); None or absent: the pipeline's defaults."""
    draw = {k: v for k, v in drawing.items() if v is not None}
    text = text or {}
    size = model.codec.image_size
    test, train = ShapesWorld("test", size, size), ShapesWorld("train", size, size)
    rows = [test[i] for i in tqdm(range(n), desc="rows", disable=not progress)]
    bar = lambda items, desc: tqdm(items, desc=desc, disable=not progress)
    prompts = make_prompts(max(1, n // 6), width=size, height=size)
    result = {
        "captioning": evaluate_captions(lambda im: model.caption(im, max_new_tokens=48, **text), rows),
        "vqa": evaluate_vqa(lambda im, q: model.ask(im, q, max_new_tokens=6, **text), rows),
        # Yes/no probes for objects present and absent (three ways of choosing the absent ones),
        # beside "always yes" and "always no"; the samplers rank kinds by the train split's scenes.
        "pope": evaluate_pope(
            lambda im, q: model.ask(im, q, max_new_tokens=3, **text),
            [Scene.from_dict(r["scene"]) for r in rows],
            [Scene.from_dict(train[i]["scene"]) for i in range(POPE_TRAINING_SCENES)],
        ),
        "t2i": evaluate_t2i(
            lambda p: model.imagine(p.description, **draw), judge, prompts, progress=lambda p: bar(p, "t2i")
        ),
        # The meter's floor: what random pixel noise scores on the same prompts (the worst of 3 spreads).
        "t2i_noise_floor": noise_floor(judge, prompts),
        "editing": evaluate_edits(lambda im, t: model.edit(im, t, **text), rows),
        "impossible_edits": evaluate_impossible_edits(lambda im, t: model.edit(im, t, **text), rows),
        "compositional_t2i": evaluate_t2i(
            lambda p: model.imagine(p.description, **draw),
            judge,
            make_prompts(max(1, n // 6), seed=1, width=size, height=size, compositional=True),
            progress=lambda p: bar(p, "comp"),
        ),
        "few_shot": {f"k={k}": few_shot(model, test, k, max(10, n // 2), **text) for k in (0, 2, 4)},
    }
    return result


def headline_figures(metrics: dict) -> dict:
    """The figures the VL-GPT issue sets goals for, each {mean, ci_low, ci_high, n}."""
    return {
        "caption_attribute_f1": metrics["captioning"]["attribute_f1"],
        "caption_cider": metrics["captioning"]["cider"],
        "vqa_accuracy": metrics["vqa"]["overall"],
        "t2i_overall": metrics["t2i"]["overall"],
        "t2i_strict_overall": metrics["t2i"]["strict_overall"],
        "t2i_noise_floor": metrics["t2i_noise_floor"],
        "editing_accuracy": metrics["editing"]["overall"],
        "compositional_t2i_overall": metrics["compositional_t2i"]["overall"],
        **{f"few_shot_{k}": v for k, v in metrics["few_shot"].items()},
        **hallucination_figures(metrics),
    }


def hallucination_figures(metrics: dict) -> dict:
    """POPE F1 and yes-ratio per sampler, the refusal rates of impossible and of possible edits,
    CHAIR_i and CHAIR_s (absent from evaluations made before these meters existed)."""
    figures = {}
    for sampler in SAMPLERS if "pope" in metrics else ():
        figures[f"pope_{sampler}_f1"] = metrics["pope"][sampler]["f1"]
        figures[f"pope_{sampler}_yes_ratio"] = metrics["pope"][sampler]["yes_ratio"]
    if "impossible_edits" in metrics:
        figures["impossible_edits_refused"] = metrics["impossible_edits"]["refused"]
        figures["possible_edits_refused"] = metrics["editing"]["wrongly_refused"]
    if "chair" in metrics["captioning"]:
        figures["chair_i"] = metrics["captioning"]["chair"]["chair_i"]
        figures["chair_s"] = metrics["captioning"]["chair"]["chair_s"]
    return figures


def headline(metrics: dict) -> dict:
    """`headline_figures`' point values: the `headline` of eval_all.json and metrics.json."""
    return {name: figure["mean"] for name, figure in headline_figures(metrics).items()}


def report_examples(model: Pipeline, n: int = 6) -> dict:
    """Examples for the HTML report: captions, answers, drawings, edits and an interleaved answer."""
    size = model.codec.image_size
    test = ShapesWorld("test", size, size)
    rows = [test[i] for i in range(n)]
    images = [render(Scene.from_dict(r["scene"])) for r in rows]
    prompts = [
        "a red circle",
        "two blue squares",
        "a green triangle to the left of a yellow star",
        "a large purple diamond and a small orange cross",
        "three pink stars",
        "a gray circle above a cyan square",
    ]
    edits = [(im, r["edit"]["instruction"]) for im, r in zip(images, rows) if r["edit"]][:4]
    interleaved = model.chat(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": draw_prompt("a red circle and a blue star")}],
            }
        ],
        max_new_tokens=24,
    )
    return {
        "captions": [(im, model.caption(im, max_new_tokens=48), r["caption"]) for im, r in zip(images, rows)],
        "vqa": [
            (im, q["question"], model.ask(im, q["question"], max_new_tokens=6), q["answer"])
            for im, r in zip(images[:4], rows[:4])
            for q in r["questions"][:2]
        ],
        "drawings": [(p, model.imagine(p)) for p in prompts],
        "edits": [(im, text, model.edit(im, text, refuse=False)) for im, text in edits],
        "interleaved": interleaved.parts,
    }
