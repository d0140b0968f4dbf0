"""WebDataset shards streamed from disk: sample i of the stream, read on demand, never all at once.

Like every source, the stream is a pure function of the sample index, so a run's data position is
one integer (the engine's sample counter, saved in each checkpoint's `state.json`). Epoch e visits
the shards in an order drawn from (seed, e) and each shard's samples in an order drawn from
(seed, e, shard): WebDataset's shard shuffle, with a whole shard as the shuffle buffer. A shard's
tar headers give every member's offset, so any sample is one seek away: resuming at sample n
fast-forwards at once instead of replaying the stream, and ranks that take disjoint slices of each
global batch read their own samples of the same shard.

Memory holds one sample count per shard and the member table of the shard being read, never the
data; opening the source reads every shard's headers once (no image bytes) to count samples.
"""

from __future__ import annotations

import bisect
import json
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
from webdataset.tariterators import base_plus_ext

from ..world.scene import Scene
from .formats import DatasetError, shard_urls
from .images import load_image, to_array

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
Members = dict[str, tuple[int, int]]  # extension -> (offset of the data in the tar, size in bytes)


def index_shard(url: str) -> list[tuple[str, Members]]:
    """(key, members) for each sample of a tar shard, in file order, from the headers alone.

    Members that share a key (`000123.png`, `000123.txt`, ...) form one sample, as in WebDataset.
    """
    samples: list[tuple[str, Members]] = []
    try:
        with tarfile.open(url, mode="r:") as tar:
            for member in tar:  # reads each header and seeks past the data
                if not member.isfile():
                    continue
                key, extension = base_plus_ext(member.name)
                if key is None:
                    continue
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][extension] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError) as error:
        raise DatasetError(f"{url}: not a readable tar shard ({error})") from None
    return samples


def part_spans(counts: list[int], first: int, stop: int) -> list[tuple[int, int, int]]:
    """(shard, first sample, stop) spans covering samples first..stop-1 of the shards in file order."""
    spans, start = [], 0
    for shard, count in enumerate(counts):
        lo, hi = max(first, start), min(stop, start + count)
        if lo < hi:
            spans.append((shard, lo - start, hi - start))
        start += count
    return spans


class StreamingSource:
    """Image-caption pairs from WebDataset shards (a folder, a glob or `shard-{000000..000009}.tar`).

    `holdout` samples at the end of the last shards form the `val` part (0: both parts are the
    whole set, for a separate --val-data). The train part is shuffled per epoch; val is read in
    file order.
    """

    def __init__(
        self, path: str | Path, image_size: int, seed: int = 0, holdout: int = 0, part: str = "train"
    ):
        self.urls = shard_urls(path)
        counts = [len(index_shard(url)) for url in self.urls]
        total = sum(counts)
        if total == 0:
            raise DatasetError(f"{path}: the shards hold no samples")
        holdout = min(holdout, total // 10)
        first, stop = (total - holdout, total) if part == "val" and holdout else (0, total - holdout)
        self.spans = part_spans(counts, first, stop)
        if not self.spans:
            raise DatasetError(
                f"{path} is too small to hold out a validation part; add data or pass --val-data"
            )
        self.length = stop - first
        self.image_size, self.seed, self.shuffle = image_size, seed, part == "train"
        self._epochs: OrderedDict[int, tuple[np.ndarray, list[int]]] = OrderedDict()
        self._orders: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._shard: tuple[int, list[tuple[str, Members]]] | None = None
        self._file = None
        self.has_scenes = "scene" in self._meta(*self._locate(0))

    def __len__(self) -> int:
        return self.length

    # --- where sample i lives ------------------------------------------------------------------
    def _epoch_layout(self, epoch: int) -> tuple[np.ndarray, list[int]]:
        """The order of the spans in `epoch` and where each begins in the epoch's stream."""
        if epoch not in self._epochs:
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(len(self.spans))
                if self.shuffle
                else np.arange(len(self.spans))
            )
            sizes = [self.spans[s][2] - self.spans[s][1] for s in order]
            self._epochs[epoch] = (order, np.cumsum([0] + sizes[:-1]).tolist())
            if len(self._epochs) > 2:  # ranks straddle at most one epoch boundary
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _within(self, epoch: int, span: int) -> np.ndarray:
        """The order of one span's samples in `epoch`."""
        key = (epoch, span)
        if key not in self._orders:
            size = self.spans[span][2] - self.spans[span][1]
            self._orders[key] = (
                np.random.default_rng([self.seed, epoch, span]).permutation(size)
                if self.shuffle
                else np.arange(size)
            )
            if len(self._orders) > 4:
                self._orders.popitem(last=False)
        return self._orders[key]

    def _locate(self, index: int) -> tuple[int, int]:
        """Stream index -> (shard number, sample number inside the shard)."""
        epoch, offset = divmod(index, self.length)
        order, starts = self._epoch_layout(epoch)
        j = bisect.bisect_right(starts, offset) - 1
        span = int(order[j])
        shard, first, _ = self.spans[span]
        return shard, first + int(self._within(epoch, span)[offset - starts[j]])

    # --- reading -------------------------------------------------------------------------------
    def _samples(self, shard: int) -> list[tuple[str, Members]]:
        """The member table of `shard`, opening it (and closing the previous one) when needed."""
        if self._shard is None or self._shard[0] != shard:
            self.close()
            self._shard = (shard, index_shard(self.urls[shard]))
            self._file = open(self.urls[shard], "rb")
        return self._shard[1]

    def _read(self, shard: int, position: int, extensions: tuple[str, ...]) -> tuple[str, str, bytes] | None:
        """(key, extension, bytes) of the first of `extensions` the sample holds, or None."""
        key, members = self._samples(shard)[position]
        for extension in extensions:
            if extension in members:
                offset, size = members[extension]
                self._file.seek(offset)
                return key, extension, self._file.read(size)
        return None

    def _meta(self, shard: int, position: int) -> dict:
        found = self._read(shard, position, ("json",))
        if found is None:
            return {}
        try:
            return json.loads(found[2])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{self.urls[shard]}: sample {found[0]} has invalid JSON ({error})") from None

    def _caption(self, shard: int, position: int) -> str:
        found = self._read(shard, position, ("txt",))
        caption = found[2].decode("utf-8") if found else self._meta(shard, position).get("caption")
        if not caption:
            key = self._samples(shard)[position][0]
            raise DatasetError(f"{self.urls[shard]}: sample {key} has no caption (.txt, or json 'caption')")
        return caption

    def get(self, index: int) -> tuple[np.ndarray, str, str]:
        shard, position = self._locate(index)
        found = self._read(shard, position, IMAGE_EXTENSIONS)
        if found is None:
            key = self._samples(shard)[position][0]
            raise DatasetError(f"{self.urls[shard]}: sample {key} has no image member (png/jpg/webp)")
        key, _, blob = found
        image = load_image(blob, label=f"{self.urls[shard]}:{key}")
        caption = self._caption(shard, position)
        return to_array(image, self.image_size), caption, caption.lower().strip(" .")

    def scene(self, index: int) -> Scene:
        scene = self._meta(*self._locate(index))["scene"]
        scene = Scene.from_dict(json.loads(scene) if isinstance(scene, str) else scene)
        return scene.as_square(self.image_size)  # in the pixels `get` returns, whatever the data's size

    def corpus(self, n: int = 100000) -> list[str]:
        """Captions of the first n samples in file order (the text tokenizer's training text)."""
        texts = []
        for shard, first, stop in self.spans:
            for position in range(first, stop):
                if len(texts) >= n:
                    return texts
                texts.append(self._caption(shard, position))
        return texts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._shard, self._file = None, None
