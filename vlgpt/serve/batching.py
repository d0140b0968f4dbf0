"""Dynamic batching: chat requests that wait together are decoded together.

Every request still takes its own slot in the worker's queue (so 429s, deadlines, cancellation and
the metrics are the ones of `worker.py`). What changes is what a chat job does when its turn comes:
it takes, besides its own conversation, every other waiting one with the same sampling settings
(up to `max_batch`, skipping those already cancelled) and answers them all with one
`Pipeline.chat_batch` call, one forward pass per position for the whole batch. The jobs of the
requests it answered then find their answers ready and return at once.

Only greedy, non-streamed requests without stop strings are batched: for them the batched answer is
the one-at-a-time answer, token for token (and so is `usage`). An answer that starts drawing an image,
and any conversation of a batch that could not be built (a prompt too long for the context), is
finished alone by `Pipeline.chat`, which draws and reports its own error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..inference.generate import GenerationError, Output
from .worker import Job


@dataclass(eq=False)
class Entry:
    messages: list[dict]
    key: tuple  # sampling settings; only equal keys share a batch
    sampling: dict
    job: Job | None = None  # set once the request holds its queue slot
    result: Output | BaseException | None = None


@dataclass
class ChatBatcher:
    pipeline: object
    max_batch: int
    metrics: object = None  # serve.metrics.ServerMetrics
    _waiting: list[Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def eligible(sampling: dict, stream: bool) -> bool:
        # Contrastive decoding distorts each prompt's images with its own seed: one at a time.
        return (
            not stream
            and sampling["temperature"] == 0
            and not sampling["stop"]
            and "decoding" not in sampling
        )

    def entry(self, messages: list[dict], sampling: dict) -> Entry:
        key = tuple(sorted((k, v) for k, v in sampling.items() if k != "seed"))  # greedy: seed unused
        return Entry(messages, key, sampling)

    def work(self, entry: Entry):
        """The worker job for `entry`: answer it (and whoever waits with it) unless already answered."""

        def run(job: Job) -> Output:
            if entry.result is None:
                self._answer(entry, job)
            if isinstance(entry.result, BaseException):
                raise entry.result
            return entry.result

        return run

    def enqueue(self, entry: Entry, job: Job) -> None:
        """Make a queued request visible to the batches formed before its own turn."""
        with self._lock:
            entry.job = job
            if entry.result is None:
                self._waiting.append(entry)

    def _answer(self, first: Entry, job: Job) -> None:
        with self._lock:
            first.job = first.job or job
            keep, group = [], [first]
            for other in self._waiting:
                if other is first or other.result is not None or other.job.should_stop():
                    continue  # answered, or cancelled: its own job is skipped by the worker
                if other.key == first.key and len(group) < self.max_batch:
                    group.append(other)
                else:
                    keep.append(other)
            self._waiting = keep
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(group))
        try:
            outputs = self.pipeline.chat_batch([e.messages for e in group], **first.sampling)
        except GenerationError:  # one prompt too long for a batch: each alone, each its own answer or error
            outputs = [None] * len(group)
        for entry, output in zip(group, outputs):
            if output is None or output.wants_image:
                try:
                    output = self.pipeline.chat(
                        entry.messages, should_stop=entry.job.should_stop, **entry.sampling
                    )
                except Exception as error:  # the request's own error, raised in its own job
                    output = error
            entry.result = output
