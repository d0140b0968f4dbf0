"""Sequences and loss masks: only assistant tokens and the image targets they own count."""

import pytest
import torch

from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data import sequences as S
from vlgpt.data.sources import WorldSource

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


def test_drawn_image_as_queries_scores_each_place_on_its_own_embedding():
    """lm.draw=queries: a drawn image's places hold queries and are scored on themselves; an image
    the model reads stays an input."""
    read, drawn = torch.randn(2, 4), torch.randn(3, 4)
    segments = [S.image(read), S.text("Draw it again."), S.image(drawn, train=True), S.eos()]
    seq = S.build(segments, TOK, 4, draw_queries=True)
    img = (seq["ids"] == TOK.img_id).nonzero().flatten()[1].item()
    places = slice(img + 1, img + 4)
    assert seq["is_query"][places].all() and seq["is_query"].sum() == 3  # the read image is no query
    assert seq["image_target_mask"][places].all() and not seq["image_target_mask"][img]
    assert torch.equal(seq["image_targets"][places], drawn)
    assert seq["image_target_mask"].sum() == 3
    assert seq["text_targets"][img + 3] == TOK.img_end_id
    plain = S.build(segments, TOK, 4)
    assert not plain["is_query"].any() and torch.equal(plain["image_targets"][img], drawn[0])
    batch = S.collate([seq, plain], TOK.pad_id)
    assert torch.equal(batch["is_query"][0, : len(seq["ids"])], seq["is_query"])


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


def test_text_loss_weighs_each_reply_by_its_length_or_not():
    """`text_loss="turn"`: each assistant reply's targets share a weight of 1, so a short answer counts
    as much as a long caption; "sqrt": a reply of n targets weighs sqrt(n); "token" weighs every
    target 1, and the model's weighted mean is then the plain per-token cross-entropy."""
    from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
    from vlgpt.models.vlgpt import VLGPT

    emb = torch.randn(2, 4)
    caption, answer = "An image of a red circle and a blue square.", "red"
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
        {"role": "assistant", "content": caption},
        {"role": "user", "content": "What color is the circle?"},
        {"role": "assistant", "content": answer},
    ]
    segments = S.chat_segments(messages, [emb])
    by_token, by_turn = (S.build(segments, TOK, 4, text_loss=mode) for mode in ("token", "turn"))
    scored = by_token["text_targets"] != -100
    assert torch.equal(by_token["text_weights"], scored.float())
    weights = by_turn["text_weights"][scored].tolist()
    n_caption, n_answer = len(TOK.encode(caption)) + 1, len(TOK.encode(answer)) + 1  # each with its [EOS]
    assert len(weights) == n_caption + n_answer
    assert weights == pytest.approx([1 / n_caption] * n_caption + [1 / n_answer] * n_answer)
    assert not by_turn["text_weights"][~scored].any()
    by_sqrt = S.build(segments, TOK, 4, text_loss="sqrt")["text_weights"][scored].tolist()
    assert by_sqrt == pytest.approx([n_caption**-0.5] * n_caption + [n_answer**-0.5] * n_answer)

    torch.manual_seed(0)
    model = VLGPT(
        VLGPTConfig(TOK.vocab_size, 2, 4, LanguageModelConfig(width=32, depth=1, heads=2, mlp_hidden=64))
    )
    batch = S.collate([by_token], TOK.pad_id)
    weighted = model(batch)["ce"]
    del batch["text_weights"]
    assert torch.allclose(weighted, model(batch)["ce"], atol=1e-6)
    assert not torch.allclose(model(S.collate([by_turn], TOK.pad_id))["ce"], weighted)
    with pytest.raises(ValueError, match="token, sqrt, turn"):
        S.build(segments, TOK, 4, text_loss="sample")


def test_image_modeling_regresses_the_images_the_model_reads(serve_run):
    """With `image_modeling` (the default), an image the model reads (image -> caption, a question's
    image) has its embeddings regressed too, each from those before it; without, only drawn images."""
    from vlgpt.core.presets import preset
    from vlgpt.data.sources import WORLD
    from vlgpt.train.stages import StageInputs
    from vlgpt.train.stages.instruct import InstructStage
    from vlgpt.train.stages.pretrain import PretrainStage

    def image_targets_of_read_images(stage_class, image_modeling: bool) -> tuple[int, int]:
        stage = stage_class(
            StageInputs(preset("tiny").model, WORLD, 0, 8), run=serve_run, image_modeling=image_modeling
        )
        read = regressed = 0
        for index in range(40):
            segments, _ = stage.sample(index)
            if segments[0].kind != "image" and not (
                len(segments) > 1 and segments[0].value == S.USER and segments[1].kind == "image"
            ):
                continue  # not a sample that opens by reading an image
            batch = stage.batch(index, 1)
            first = int(batch["is_image"][0].nonzero()[0])
            read += 1
            regressed += int(batch["image_target_mask"][0, first])  # the first embedding after [IMG]
        return read, regressed

    for stage_class in (PretrainStage, InstructStage):
        read, regressed = image_targets_of_read_images(stage_class, True)
        assert read > 0 and regressed == read, (stage_class.name, read, regressed)
        read, regressed = image_targets_of_read_images(stage_class, False)
        assert read > 0 and regressed == 0, (stage_class.name, read, regressed)


def test_layout_plan_off_draws_straight_from_the_prompt(serve_run):
    """`layout_plan` (on by default) puts the scene's 'Layout: ...' text before each drawn image on the
    Shapes world; off, the drawn image follows the prompt at once, in pretraining and in instruct."""
    from vlgpt.core.presets import preset
    from vlgpt.data.sources import WORLD
    from vlgpt.train.stages import StageInputs
    from vlgpt.train.stages.instruct import InstructStage
    from vlgpt.train.stages.pretrain import PretrainStage

    def drawings(stage_class, layout_plan: bool) -> tuple[int, int]:
        stage = stage_class(
            StageInputs(preset("tiny").model, WORLD, 0, 8), run=serve_run, layout_plan=layout_plan
        )
        drawn = planned = 0
        for index in range(60):
            segments, _ = stage.sample(index)
            texts = " ".join(s.value for s in segments if s.kind == "text" and isinstance(s.value, str))
            if not any(s.kind == "image" and s.train for s in segments):
                continue  # draws nothing
            drawn += 1
            planned += "Layout:" in texts
        return drawn, planned

    for stage_class in (PretrainStage, InstructStage):
        drawn, planned = drawings(stage_class, True)
        assert drawn > 0 and planned > 0, (stage_class.name, drawn, planned)
        drawn, planned = drawings(stage_class, False)
        assert drawn > 0 and planned == 0, (stage_class.name, drawn, planned)


def test_drawing_queries_through_the_cache_equal_the_full_forward():
    """lm.draw=queries on our own transformer: the queries fed in one pass after [IMG] through the
    KV cache (generation) have the hidden states of the full forward at a drawn image's places."""
    from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
    from vlgpt.models.vlgpt import VLGPT

    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=64, draw="queries")
    model = VLGPT(VLGPTConfig(TOK.vocab_size, 4, 4, lm)).eval()
    seq = S.build(
        [S.text("An image of a red circle."), S.image(torch.randn(4, 4), train=True)],
        TOK,
        4,
        draw_queries=True,
    )
    batch = {k: seq[k][None] for k in ("ids", "image_embeds", "is_image", "is_query")}
    img = int((seq["ids"] == TOK.img_id).nonzero()[0])
    with torch.no_grad():
        full = model(batch)["hidden"][0, img + 1 : img + 5]
        cache = model.new_cache(1, 64)
        model({k: v[:, : img + 1] for k, v in batch.items()}, cache)
        cached = model.query_states(cache)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
