import pytest

from vlgpt.core.config import ConfigError
from vlgpt.core.presets import STAGES
from vlgpt.train import get_stage, list_stages


def test_every_stage_is_registered_in_training_order():
    assert list_stages() == list(STAGES)  # the CLI's choices (core/presets.STAGES) and the registry agree


@pytest.mark.parametrize("name", list_stages())
def test_each_stage_builds_from_a_run(name):
    cls = get_stage(name)
    assert cls.name == name and callable(cls.from_run)


def test_unknown_stage_names_the_choices():
    with pytest.raises(
        ConfigError, match="unknown stage 'nope'; choose one of clip, vae, diffusion, tokenizer"
    ):
        get_stage("nope")
