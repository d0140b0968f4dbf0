"""One model, one thread, a bounded queue in front.

The model is not thread-safe (one KV cache per call, torch state), so every model call runs on a
single dedicated thread. At most `queue_size` calls wait behind the running one; a request that
finds no room is refused at once (429 with Retry-After) rather than piling up. Each call has a
deadline, and a `Job` carries a cancellation flag that the model call polls (between tokens, or
between images), so a request that timed out or whose client went away stops using the model. A
queued job that was cancelled is dropped when its turn comes, before it runs.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import APIError

T = TypeVar("T")
POLL_S = 0.1  # how often a waiting request checks its client and its deadline


class Cancelled(Exception):
    """The job was cancelled (client gone or deadline passed) before or while it ran."""


@dataclass
class Job:
    deadline: float  # time.monotonic() after which the job is cancelled
    cancelled: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        """Polled by the model call: stop when cancelled or out of time."""
        return self.cancelled.is_set() or time.monotonic() > self.deadline


class ModelWorker:
    """The model's one thread and the bounded queue in front of it (see the module docstring)."""

    def __init__(self, queue_size: int, timeout_s: float, metrics=None):
        self.capacity = queue_size + 1  # one running + queue_size waiting
        self.timeout_s = timeout_s
        self.metrics = metrics  # a serve.metrics.ServerMetrics, or None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlgpt-model")
        self._lock = threading.Lock()
        self.pending = 0  # jobs submitted and not finished (running or waiting)
        self.started = 0  # jobs that reached the model
        self.skipped = 0  # jobs dropped at their turn, cancelled while they waited
        self.abandoned = 0  # requests whose client went away before their answer
        self._mean_run_s = 1.0  # moving average of run time, for Retry-After

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times the mean run time."""
        return max(1, math.ceil(self.pending * self._mean_run_s))

    def ensure_room(self) -> None:
        """Raise the 429 early, before a request spends time decoding its images (submit checks again)."""
        with self._lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self.pending >= self.capacity:
            retry = self.retry_after()
            raise APIError(
                429,
                f"the server is busy ({self.capacity - 1} requests already wait for the model); "
                f"retry in {retry} s",
                code="queue_full",
                headers={"Retry-After": str(retry)},
            )

    def submit(self, fn: Callable[[Job], T]) -> tuple[Job, asyncio.Future[T]]:
        """Queue `fn(job)` on the model thread, or raise APIError 429 when the queue is full.

        Call from the event loop. The returned asyncio future may be cancelled freely: that never
        cancels the queued call itself (the slot is released only when the call ends or is skipped).
        """
        with self._lock:
            self._refuse_if_full()
            self.pending += 1
        job = Job(deadline=time.monotonic() + self.timeout_s)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        result.add_done_callback(_retrieve)
        self._executor.submit(self._run, fn, job).add_done_callback(
            lambda done: loop.call_soon_threadsafe(_copy_outcome, done, result)
        )
        return job, result

    def _run(self, fn: Callable[[Job], T], job: Job) -> T:
        try:
            if job.should_stop():
                with self._lock:
                    self.skipped += 1
                if self.metrics is not None:
                    self.metrics.jobs.labels("skipped").inc()
                raise Cancelled("cancelled before it ran")
            with self._lock:
                self.started += 1
            start = time.monotonic()
            try:
                result = fn(job)
            except BaseException:
                if self.metrics is not None:
                    self.metrics.jobs.labels("failed").inc()
                raise
            seconds = time.monotonic() - start
            self._mean_run_s = 0.8 * self._mean_run_s + 0.2 * seconds
            if self.metrics is not None:
                self.metrics.job_done(result, seconds)
            return result
        finally:
            with self._lock:
                self.pending -= 1

    async def call(self, fn: Callable[[Job], T], is_disconnected: Callable[[], Awaitable[bool]]) -> T:
        """Run `fn(job)` on the model thread and wait for it, watching the client and the deadline."""
        job, result = self.submit(fn)
        return await self.watch(job, result, is_disconnected)

    async def watch(
        self, job: Job, awaitable: Awaitable[T], is_disconnected: Callable[[], Awaitable[bool]]
    ) -> T:
        """Await `awaitable` for `job`'s request; cancel the job if the client leaves or time runs out.

        A job that ends in Cancelled was stopped by its deadline: that becomes a 504.
        """
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=POLL_S)
                if done:
                    try:
                        return task.result()
                    except Cancelled:
                        raise timeout_error(self.timeout_s) from None
                if await is_disconnected():
                    self.abandoned += 1
                    if self.metrics is not None:
                        self.metrics.abandoned.inc()
                    raise Cancelled("the client went away")
                if time.monotonic() > job.deadline:
                    raise timeout_error(self.timeout_s)
        except BaseException:
            job.cancelled.set()
            task.cancel()
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def timeout_error(timeout_s: float) -> APIError:
    return APIError(
        504,
        f"the request took longer than the server's {timeout_s:g} s limit (--timeout) and was cancelled",
        code="timeout",
    )


def _copy_outcome(done: Future, result: asyncio.Future) -> None:
    if result.cancelled():
        return
    if done.exception() is not None:
        result.set_exception(done.exception())
    else:
        result.set_result(done.result())


def _retrieve(result: asyncio.Future) -> None:
    """Mark a finished future's exception as seen (its request may have stopped waiting)."""
    if not result.cancelled():
        result.exception()
