import os
import subprocess
import sys

import pytest

# Tests never reach a model hub; everything is built locally from configs and the Shapes world.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_STAGES = ("clip", "tokenizer", "decoder", "pretrain", "instruct")


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    """One tiny run (5 stages x 6 steps) shared by tests/test_serve*.py, trained through the CLI's entry
    point; one process for the five stages saves four interpreter and torch start-ups (~15 s)."""
    run = tmp_path_factory.mktemp("serve-run")
    script = (
        "import sys\nfrom vlgpt.cli import main\n"
        f"for stage in {TINY_STAGES!r}:\n"
        f"    code = main(['train', stage, '--preset', 'tiny', '--out', {str(run)!r}, '--steps', '6',"
        " '--save-every', '0'])\n"
        "    if code:\n        sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> str:
    """64 Shapes-world rows at 32x32 in four WebDataset shards of 16, as a brace pattern."""
    from vlgpt.data.world_files import write_world

    root = tmp_path_factory.mktemp("shards")
    write_world(root / "wds", 64, fmt="wds", size=32, shard_size=16, progress=False)
    return str(root / "wds" / "shards" / "train-{000000..000003}.tar")
