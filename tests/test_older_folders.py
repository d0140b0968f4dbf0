"""Model folders written before a rename still load, and give the outputs they gave: the VL-GPT
folder's older weight names (token embedding and LM head at the top, the image head as
`regression_head`), and the decoder stage's training checkpoints that named the pair `codec`."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from vlgpt.core.checkpoint import WEIGHTS_FILE, load_weights, save_model
from vlgpt.core.config import LanguageModelConfig, PixelDecoderModelConfig, TokenizerPairConfig, VLGPTConfig
from vlgpt.core.presets import preset
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data import sequences as S
from vlgpt.models.end_to_end import EndToEndCodec
from vlgpt.models.loading import load_vlgpt, save_vlgpt
from vlgpt.models.pixel_decoder import build_pixel_decoder
from vlgpt.models.tokenizer_pair import TokenizerPair
from vlgpt.models.vlgpt import VLGPT

TINY = preset("tiny").model


def rename_weights(folder, rename) -> list[str]:
    state = load_file(str(folder / WEIGHTS_FILE))
    save_file({rename(k): v for k, v in state.items()}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return sorted(state)


def test_a_vlgpt_folder_with_the_older_weight_names_loads_and_answers_alike(tmp_path):
    tokenizer = TextTokenizer.train(["a red circle", "two blue squares"] * 20, 300)
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=32, depth=1, heads=2, mlp_hidden=64, max_seq_len=64)
    model = VLGPT(VLGPTConfig(tokenizer.vocab_size, 4, 8, lm)).eval()
    save_vlgpt(tmp_path, model, tokenizer, stage="pretrain")
    older = {
        "transformer.token_embed.": "token_embed.",
        "transformer.lm_head.": "lm_head.",
        "image_head.": "regression_head.",
    }

    def to_older(key: str) -> str:
        for new, old in older.items():
            if key.startswith(new):
                return old + key[len(new) :]
        return key

    names = rename_weights(tmp_path, to_older)
    assert any(n.startswith("image_head.") for n in names)
    assert any(k.startswith("regression_head.") for k in load_file(str(tmp_path / WEIGHTS_FILE)))
    loaded, config, _ = load_vlgpt(tmp_path)
    assert (
        config["stage"] == "pretrain"
        and json.loads((tmp_path / "config.json").read_text())["kind"] == "vlgpt"
    )
    segments = [S.text("a red circle"), S.image(torch.randn(4, 8), train=True), S.eos()]
    batch = S.collate([S.build(segments, tokenizer, 8)], tokenizer.pad_id)
    with torch.no_grad():
        want, got = model(batch), loaded(batch)
    assert torch.equal(want["hidden"], got["hidden"])
    assert torch.equal(model.image_head(want["hidden"]), loaded.image_head(got["hidden"]))


def test_a_decoder_stage_checkpoint_that_named_the_pair_codec_resumes(tmp_path):
    torch.manual_seed(0)
    pair = TokenizerPair(TokenizerPairConfig.for_clip(TINY.tokenizer, TINY.clip))
    decoder = build_pixel_decoder(PixelDecoderModelConfig.for_clip(TINY.decoder, TINY.clip))
    chain = EndToEndCodec(TINY.decoder, pair, decoder)
    save_model(tmp_path, chain, {"kind": "checkpoint"})
    names = rename_weights(tmp_path, lambda k: "codec." + k[len("pair.") :] if k.startswith("pair.") else k)
    assert any(n.startswith("pair.") for n in names)
    torch.manual_seed(1)
    fresh = EndToEndCodec(TINY.decoder, TokenizerPair(pair.config), build_pixel_decoder(decoder.model_config))
    load_weights(tmp_path, fresh)
    for (name, want), got in zip(chain.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(want, got), name
