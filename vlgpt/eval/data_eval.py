"""`vlgpt eval data DIR --ckpt RUN`: how good a run is on a user's own held-out data.

Captions (imagefolder or WebDataset rows with a caption, or LLaVA entries with a `caption` field)
are scored by BLEU-4, CIDEr-D and ROUGE-L through pycocoevalcap (`caption_scores`). Conversations
(LLaVA JSON) are scored turn by turn: the model answers each assistant turn given the conversation
up to it, with its images, and the answer is compared with the dataset's by exact match after the
official VQA answer normalization. Every figure comes with n and a bootstrap 95% interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from ..data.conversations import llava_messages
from ..data.formats import DatasetError, Example, read_examples
from .text_metrics import caption_scores, normalize_vqa_answer, summarize


def question_turns(example: Example) -> Iterator[tuple[list[dict], str]]:
    """(messages up to an assistant turn, that turn's text) for each assistant turn of a conversation,
    image parts holding the example's images in order."""
    images = iter(example.load_images())
    messages = llava_messages(example.conversations or [])
    for message in messages:
        for part in message["content"]:
            if part["type"] == "image":
                part["image"] = next(images, None)
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and i > 0:
            answer = " ".join(p["text"] for p in message["content"] if p["type"] == "text").strip()
            if answer:
                yield messages[:i], answer


def evaluate_data(model, path: str | Path, limit: int | None = None, max_new_tokens: int = 48) -> dict:
    """Caption and question figures of `model` (a loaded pipeline) on the dataset at `path`."""
    examples = list(islice(read_examples(path), limit))
    if not examples:
        raise DatasetError(f"{path} holds no examples")
    with_captions = [e for e in examples if e.caption and len(e.image_paths) == 1]
    with_turns = [e for e in examples if e.conversations]
    if not with_captions and not with_turns:
        raise DatasetError(
            f"{path}: no example has a caption or a conversation; `vlgpt eval data` scores captions "
            "(imagefolder/WebDataset text, or a LLaVA entry's caption) and assistant answers (LLaVA)"
        )
    result: dict = {"data": str(path), "examples": len(examples)}
    if with_captions:
        predictions = [
            model.caption(e.load_images()[0], max_new_tokens=max_new_tokens)
            for e in tqdm(with_captions, desc="captions", unit="image")
        ]
        scores = caption_scores(predictions, [[e.caption] for e in with_captions])
        # Corpus scores as coco-caption reports them, and a bootstrap interval over the per-caption ones.
        result["captions"] = {"n": len(predictions), "backend": scores["backend"]}
        for name in ("bleu4", "cider", "rougeL"):
            result["captions"][name] = scores[name]
            result["captions"][f"{name}_per_caption"] = summarize(scores["per_item"][name])
        shown = zip(with_captions[:8], predictions)
        result["caption_examples"] = [{"id": e.id, "prediction": p, "reference": e.caption} for e, p in shown]
    turns = [turn for e in with_turns for turn in question_turns(e)]
    if turns:
        correct, shown = [], []
        for messages, answer in tqdm(turns, desc="answers", unit="turn"):
            said = model.chat(messages, max_new_tokens=max_new_tokens).text
            correct.append(float(normalize_vqa_answer(said) == normalize_vqa_answer(answer)))
            if len(shown) < 8:
                shown.append({"prediction": said, "answer": answer})
        result["answers"] = {"exact_match": summarize(correct)}
        result["answer_examples"] = shown
    return result


def headline(result: dict) -> dict:
    """The figures for the table: captions' corpus scores and the answers' exact match."""
    out = {}
    for name in ("bleu4", "cider", "rougeL"):
        if name in result.get("captions", {}):
            out[f"caption {name}"] = result["captions"][name]
    if "answers" in result:
        out["answer exact match"] = result["answers"]["exact_match"]["mean"]
        out["answer n"] = result["answers"]["exact_match"]["n"]
    if "captions" in result:
        out["caption n"] = result["captions"]["n"]
    return out
