"""Sequences and loss masks: only assistant tokens and the image targets they own count."""

import torch

from vlgpt.data import sequences as S
from vlgpt.data.sources import WorldSource
from vlgpt.text_tokenizer import TextTokenizer

TOK = TextTokenizer.train(WorldSource("train", 32).corpus(50) + ["User: Assistant:"], 300)


def test_image_span_layout_and_targets():
    emb = torch.randn(3, 4)
    seq = S.build([S.text("An image of a red circle."), S.image(emb, train=True), S.eos()], TOK, 4)
    ids, is_image = seq["ids"], seq["is_image"]
    img = (ids == TOK.img_id).nonzero().item()
    assert ids[img + 4] == TOK.img_end_id and is_image[img + 1 : img + 4].all() and not is_image[img]
    # [IMG] predicts the first embedding; the last embedding predicts [/IMG]; prompt text is not trained.
    assert seq["image_target_mask"][img] and torch.equal(seq["image_targets"][img], emb[0])
    assert torch.equal(seq["image_targets"][img + 2], emb[2])
    assert seq["text_targets"][img + 3] == TOK.img_end_id
    assert (seq["text_targets"][: img - 1] == -100).all()
    assert seq["text_targets"][-2] == TOK.eos_id


def test_chat_masks_train_only_assistant_turns():
    emb = torch.randn(2, 4)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]},
        {"role": "assistant", "content": "red"},
    ]
    seq = S.build(S.chat_segments(messages, [emb]), TOK, 4)
    trained = seq["text_targets"][seq["text_targets"] != -100].tolist()
    assert trained == TOK.encode("red") + [TOK.eos_id]
    assert not seq["image_target_mask"].any()  # the user's image is context, not a target
    batch = S.collate([seq, S.build(S.chat_segments(messages[:1], [emb]), TOK, 4)], TOK.pad_id)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert (batch["text_targets"][1] == -100).all()
