"""Interleaved text-and-image sequences for VL-GPT, with the loss masks that go with them.

A sample is a list of segments, each text or an image's N embeddings, each with a `train` flag.
`build` lays them out as one sequence — text as token ids, images as `[IMG] e_1 ... e_N [/IMG]` —
and writes the next-position targets: position t is scored on position t + 1 when t + 1 belongs to
a trained segment (cross-entropy for a token, MSE for an image embedding).

With `draw_queries` (`lm.draw=queries`), a trained image is drawn by learned queries instead: its N
positions are marked `is_query` (the model puts a query for each place there, not the embedding)
and each is scored on its own embedding, so no drawn embedding is ever read back.

Chat uses a plain template: `User: ...` / `Assistant: ...`, each assistant turn ending in [EOS];
only assistant turns are trained (their text, [IMG]/[/IMG] and image embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.text_tokenizer import TextTokenizer

USER, ASSISTANT = "User:", "Assistant:"


@dataclass
class Segment:
    kind: str  # "text" | "image" | "eos"
    value: object = None  # str for text, [N, d] tensor for an image
    train: bool = False


def text(value: str, train: bool = False) -> Segment:
    return Segment("text", value, train)


def image(embeddings: torch.Tensor, train: bool = False) -> Segment:
    return Segment("image", embeddings, train)


def eos(train: bool = True) -> Segment:
    return Segment("eos", None, train)


def chat_segments(
    messages: list[dict],
    images: list[torch.Tensor],
    train_assistant: bool = True,
    add_generation_prompt: bool = False,
) -> list[Segment]:
    """Messages [{role, content: [{"type": "text"|"image"}...] or str}] -> segments.

    Image parts consume `images` in order (their N embeddings each).
    """
    segments: list[Segment] = []
    queue = list(images)
    for message in messages:
        role = message["role"]
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"unknown chat role {role!r}; use user, assistant or system")
        is_assistant = role == "assistant"
        segments.append(text(ASSISTANT if is_assistant else USER))
        parts = message["content"]
        parts = [{"type": "text", "text": parts}] if isinstance(parts, str) else parts
        for part in parts:
            if part["type"] == "text":
                segments.append(text(part["text"], train=is_assistant and train_assistant))
            elif part["type"] in ("image", "image_url"):
                if not queue:
                    raise ValueError("a message has more image parts than images were given")
                segments.append(image(queue.pop(0), train=is_assistant and train_assistant))
            else:
                raise ValueError(f"unknown content part type {part['type']!r}; use text or image")
        if is_assistant:
            segments.append(eos(train=train_assistant))
    if queue:
        raise ValueError(f"{len(queue)} image(s) given but not referenced by any image part")
    if add_generation_prompt:
        segments.append(text(ASSISTANT))
    return segments


TEXT_LOSSES = ("token", "sqrt", "turn")


def build(
    segments: list[Segment],
    tokenizer: TextTokenizer,
    image_dim: int,
    add_bos: bool = True,
    text_loss: str = "token",
    draw_queries: bool = False,
) -> dict:
    """One sequence: ids [T], image_embeds [T, d], is_image [T], and targets for positions 0..T-1.

    `text_weights` [T] weighs each text target in the cross-entropy: 1 each (`text_loss="token"`, the
    per-token mean), 1 / (the text targets of its turn) (`"turn"`: a turn, a run of trained
    positions such as one assistant reply, counts once however long it is, so a two-word answer
    weighs what a twenty-word caption does), or 1 / sqrt(the text targets of its turn) (`"sqrt"`,
    between the two: a turn of n targets weighs sqrt(n))."""
    if text_loss not in TEXT_LOSSES:
        raise ValueError(f"text_loss must be one of {', '.join(TEXT_LOSSES)}, got {text_loss!r}")
    ids: list[int] = []
    train: list[bool] = []
    embeds: list[tuple[int, torch.Tensor]] = []  # (position, embedding)
    queries: list[int] = []  # positions a query fills (draw_queries: a trained image's places)
    if add_bos:
        ids.append(tokenizer.bos_id)
        train.append(False)
    for seg in segments:
        if seg.kind == "text":
            new = tokenizer.encode(seg.value)
        elif seg.kind == "eos":
            new = [tokenizer.eos_id]
        else:
            emb = seg.value
            if emb.ndim != 2 or emb.shape[1] != image_dim:
                raise ValueError(f"image embeddings must be [N, {image_dim}], got {tuple(emb.shape)}")
            start = len(ids) + 1
            embeds += [(start + i, emb[i]) for i in range(emb.shape[0])]
            if draw_queries and seg.train:
                queries += range(start, start + emb.shape[0])
            new = [tokenizer.img_id] + [tokenizer.pad_id] * emb.shape[0] + [tokenizer.img_end_id]
        ids += new
        train += [seg.train] * len(new)
    T = len(ids)
    image_embeds = torch.zeros(T, image_dim)
    is_image = torch.zeros(T, dtype=torch.bool)
    for position, emb in embeds:
        image_embeds[position] = emb
        is_image[position] = True
    is_query = torch.zeros(T, dtype=torch.bool)
    is_query[queries] = True
    ids_tensor = torch.tensor(ids)
    text_targets = torch.full((T,), -100, dtype=torch.long)
    image_targets = torch.zeros(T, image_dim)
    image_target_mask = torch.zeros(T, dtype=torch.bool)
    nxt = torch.arange(1, T)
    trained_next = torch.tensor(train[1:], dtype=torch.bool)
    text_next = trained_next & ~is_image[1:]
    image_next = trained_next & is_image[1:] & ~is_query[1:]
    text_targets[:-1][text_next] = ids_tensor[nxt][text_next]
    image_targets[:-1][image_next] = image_embeds[nxt][image_next]
    image_target_mask[:-1] = image_next
    image_targets[is_query] = image_embeds[is_query]  # a query is scored on its own place
    image_target_mask |= is_query
    text_weights = text_next.float()
    if text_loss != "token" and text_next.any():
        # Number the runs of trained targets; a run of n text targets weighs 1 (turn) or sqrt(n).
        starts = trained_next & ~torch.cat([torch.zeros(1, dtype=torch.bool), trained_next[:-1]])
        turn = torch.cumsum(starts.long(), 0) - 1
        per_turn = torch.zeros(int(turn.max()) + 1).index_add_(
            0, turn[text_next], torch.ones(int(text_next.sum()))
        )
        share = per_turn[turn[text_next]]
        text_weights[text_next] = 1.0 / (share if text_loss == "turn" else share.sqrt())
    weights = torch.zeros(T)
    weights[:-1] = text_weights
    return {
        "ids": ids_tensor,
        "image_embeds": image_embeds,
        "is_image": is_image,
        "is_query": is_query,
        "text_targets": text_targets,
        "image_targets": image_targets,
        "image_target_mask": image_target_mask,
        "text_weights": weights,
    }


def collate(sequences: list[dict], pad_id: int, max_len: int | None = None) -> dict:
    """Right-pad sequences to one length; attention_mask marks real positions."""
    longest = max(len(s["ids"]) for s in sequences)
    if max_len is not None and longest > max_len:
        raise ValueError(
            f"a sequence of {longest} positions exceeds the context of {max_len}; "
            "shorten the prompt or raise lm.max_seq_len"
        )
    B, d = len(sequences), sequences[0]["image_embeds"].shape[1]
    batch = {
        "ids": torch.full((B, longest), pad_id, dtype=torch.long),
        "image_embeds": torch.zeros(B, longest, d),
        "is_image": torch.zeros(B, longest, dtype=torch.bool),
        "is_query": torch.zeros(B, longest, dtype=torch.bool),
        "attention_mask": torch.zeros(B, longest, dtype=torch.long),
        "text_targets": torch.full((B, longest), -100, dtype=torch.long),
        "image_targets": torch.zeros(B, longest, d),
        "image_target_mask": torch.zeros(B, longest, dtype=torch.bool),
    }
    if "text_weights" in sequences[0]:  # `build` writes them; a hand-made sequence may not
        batch["text_weights"] = torch.zeros(B, longest)
    keys = [key for key in batch if key != "attention_mask" and key in sequences[0]]
    for i, s in enumerate(sequences):
        n = len(s["ids"])
        for key in keys:
            batch[key][i, :n] = s[key]
        batch["attention_mask"][i, :n] = 1
    return batch
