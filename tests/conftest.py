import os

import pytest

# Tests never reach a model hub; everything is built locally from configs and the Shapes world.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> str:
    """64 Shapes-world rows at 32x32 in four WebDataset shards of 16, as a brace pattern."""
    from vlgpt.world.export import write_world

    root = tmp_path_factory.mktemp("shards")
    write_world(root / "wds", 64, fmt="wds", size=32, shard_size=16, progress=False)
    return str(root / "wds" / "shards" / "train-{000000..000003}.tar")
