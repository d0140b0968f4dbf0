"""`vlgpt eval data DIR --ckpt RUN`: how good a run is on a user's own held-out data, in any format.

One reader for every format (`scored_items`) turns each example into what can be scored:
- captions: an imagefolder or WebDataset row's text, a LLaVA entry's `caption`, and any conversation
  turn that asks for a description ("Describe the image.", the words instruction tuning uses). They
  are scored by BLEU-4, CIDEr-D and ROUGE-L through pycocoevalcap (`caption_scores`);
- answers: every other assistant turn of a conversation (given the conversation up to it, with its
  images), and the `questions` ([{question, answer}]) of an imagefolder or WebDataset row, asked
  alone after its image. They are scored by exact match after the official VQA answer normalization.
Every figure comes with n and a bootstrap 95% interval of that figure. An item whose prompt leaves the
model's context no room for an answer is left out and counted (`too_long`), not scored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from ..data.conversations import llava_messages
from ..data.formats import DatasetError, Example, read_examples
from ..inference.generate import PromptTooLong
from .text_metrics import caption_scores, normalize_vqa_answer, summarize

# A user turn asking for a caption rather than an answer: the project's own prompt ("Describe the
# image.") and the common wordings of caption requests in LLaVA-style data. "Describe the colour of
# the star" is a question.
CAPTION_REQUEST = re.compile(
    r"(describe|caption) (the|this) (image|picture|photo)( briefly| concisely| in detail)?"
    r"|write a (short |brief )?caption( for (the|this) (image|picture|photo))?"
    r"|(provide|give|write) a (short |brief |concise )?description"
    r" of (the|this) (given )?(image|picture|photo)"
)


def is_caption_request(text: str) -> bool:
    words = " ".join(text.lower().replace("<image>", " ").split()).strip(" .?!:")
    return CAPTION_REQUEST.fullmatch(words) is not None


def _asked(messages: list[dict]) -> str:
    return " ".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")


def conversation_turns(example: Example) -> Iterator[tuple[list[dict], str]]:
    """(messages up to an assistant turn, that turn's text) for each assistant turn of a conversation
    (LLaVA's, or a WebDataset row's `conversations`), image parts holding the example's images in
    order; then each of the row's `questions`, asked alone after its one image."""
    images = example.load_images()
    if example.conversations:
        remaining = iter(images)
        messages = llava_messages(example.conversations)
        for message in messages:
            for part in message["content"]:
                if part["type"] == "image":
                    part["image"] = next(remaining, None)
        for i, message in enumerate(messages):
            if message["role"] == "assistant" and i > 0:
                answer = " ".join(p["text"] for p in message["content"] if p["type"] == "text").strip()
                if answer:
                    yield messages[:i], answer
    questions = example.meta.get("questions") or []
    if len(images) == 1 and isinstance(questions, list):
        for qa in questions:
            if isinstance(qa, dict) and qa.get("question") and qa.get("answer"):
                content = [
                    {"type": "image", "image": images[0]},
                    {"type": "text", "text": str(qa["question"])},
                ]
                yield [{"role": "user", "content": content}], str(qa["answer"])


def question_turns(example: Example) -> Iterator[tuple[list[dict], str]]:
    """The turns of `conversation_turns` that ask a question (not for a caption)."""
    return ((m, a) for m, a in conversation_turns(example) if not is_caption_request(_asked(m)))


def scored_items(example: Example) -> tuple[list[tuple[object, str]], list[tuple[list[dict], str]]]:
    """(captions, questions) of one example: captions as (an image or the messages asking for it,
    the reference), questions as (messages, the answer)."""
    captions, questions = [], []
    if example.caption and len(example.load_images()) == 1:
        captions.append((example.load_images()[0], example.caption))
    for messages, answer in conversation_turns(example):
        if is_caption_request(_asked(messages)):
            captions.append((messages, answer))
        else:
            questions.append((messages, answer))
    return captions, questions


def evaluate_data(model, path: str | Path, limit: int | None = None, max_new_tokens: int = 48) -> dict:
    """Caption and question figures of `model` (a loaded pipeline) on the dataset at `path`."""
    examples = list(islice(read_examples(path), limit))
    if not examples:
        raise DatasetError(f"{path} holds no examples")
    captions, questions, ids = [], [], []
    for example in examples:
        said, asked = scored_items(example)
        captions += said
        ids += [example.id] * len(said)
        questions += asked
    if not captions and not questions:
        raise DatasetError(
            f"{path}: no example has a caption, a conversation or questions; `vlgpt eval data` scores "
            "captions (a row's text, a LLaVA entry's caption, a 'Describe the image.' turn) and answers "
            "(other assistant turns, a row's questions)"
        )
    result: dict = {"data": str(path), "examples": len(examples)}
    reply = lambda messages, **sampling: model.chat(messages, **sampling).text
    if captions:
        said = [
            _fitting(reply if isinstance(source, list) else model.caption, source, max_new_tokens)
            for source, _ in tqdm(captions, desc="captions", unit="caption")
        ]
        kept = [(i, r, p) for i, (_, r), p in zip(ids, captions, said) if p is not None]
        result["captions"] = {"n": len(kept), "too_long": len(said) - len(kept)}
        if kept:
            scores = caption_scores([p for *_, p in kept], [[r] for _, r, _ in kept])
            # Corpus scores as coco-caption reports them, each with a bootstrap interval of that score.
            result["captions"]["backend"] = scores["backend"]
            for name in ("bleu4", "cider", "rougeL"):
                result["captions"][name] = scores[name]
        result["caption_examples"] = [{"id": i, "prediction": p, "reference": r} for i, r, p in kept[:8]]
    if questions:
        correct, shown, too_long = [], [], 0
        for messages, answer in tqdm(questions, desc="answers", unit="turn"):
            said = _fitting(reply, messages, max_new_tokens)
            if said is None:
                too_long += 1
                continue
            correct.append(float(normalize_vqa_answer(said) == normalize_vqa_answer(answer)))
            if len(shown) < 8:
                shown.append({"question": _asked(messages), "prediction": said, "answer": answer})
        result["answers"] = {"too_long": too_long}
        if correct:
            result["answers"]["exact_match"] = summarize(correct)
        result["answer_examples"] = shown
    return result


def _fitting(generate, source, max_new_tokens: int) -> str | None:
    """What the model says, or None where the prompt leaves its context no room for an answer."""
    try:
        return generate(source, max_new_tokens=max_new_tokens)
    except PromptTooLong:
        return None


def headline(result: dict) -> dict:
    """The figures for the table, each with its 95% interval and n: captions' corpus scores and the
    answers' exact match."""
    out = {}
    for name in ("bleu4", "cider", "rougeL"):
        if name in result.get("captions", {}):
            out[f"caption {name}"] = result["captions"][name]
    if "exact_match" in result.get("answers", {}):
        out["answer exact match"] = result["answers"]["exact_match"]
    for kind in ("captions", "answers"):
        if result.get(kind, {}).get("too_long"):
            out[f"{kind} left out: too long for the context"] = result[kind]["too_long"]
    return out
