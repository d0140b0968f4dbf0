"""`GET /metrics`: the server's state in Prometheus' text format (prometheus-client).

Each app keeps its own registry (two servers in one process never mix their numbers). What a scrape
sees:

    vlgpt_queue_depth                      requests running or waiting for the model (gauge)
    vlgpt_queue_capacity                   the most that may (queue_size + 1)
    vlgpt_jobs_total{outcome}              model jobs: done | failed | skipped (cancelled while queued)
    vlgpt_abandoned_requests_total         requests whose client left before its answer
    vlgpt_request_duration_seconds{route}  whole-request latency, a histogram (streams: until the last byte)
    vlgpt_requests_total{route,status}     answered requests by HTTP status
    vlgpt_model_busy_seconds_total         time the model thread spent running jobs
    vlgpt_chat_batch_size                  requests per batched chat call, a histogram (batching.py)
    vlgpt_prompt_tokens_total, vlgpt_completion_tokens_total, vlgpt_images_total
    vlgpt_tokens_per_second, vlgpt_images_per_second   the last job's own rate (gauges)

Rates over time are Prometheus' job: `rate(vlgpt_completion_tokens_total[1m])` is tokens/s served,
divided by `rate(vlgpt_model_busy_seconds_total[1m])` it is the model's decoding speed.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # text/plain; version=...

# Latency buckets for CPU-served small models up to large ones (seconds).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUTES = frozenset({"/v1/chat/completions", "/v1/images/generations", "/v1/images/edits", "/v1/models"})


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.queue_depth = Gauge("vlgpt_queue_depth", "requests running or waiting", registry=registry)
        self.queue_capacity = Gauge("vlgpt_queue_capacity", "queue_size + 1", registry=registry)
        self.jobs = Counter("vlgpt_jobs", "model jobs by outcome", ["outcome"], registry=registry)
        self.abandoned = Counter(
            "vlgpt_abandoned_requests", "requests whose client left first", registry=registry
        )
        self.latency = Histogram(
            "vlgpt_request_duration_seconds",
            "whole-request latency",
            ["route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.requests = Counter("vlgpt_requests", "answered requests", ["route", "status"], registry=registry)
        self.busy = Counter("vlgpt_model_busy_seconds", "time spent running model jobs", registry=registry)
        self.prompt_tokens = Counter("vlgpt_prompt_tokens", "prompt positions read", registry=registry)
        self.completion_tokens = Counter("vlgpt_completion_tokens", "positions generated", registry=registry)
        self.images = Counter("vlgpt_images", "images drawn", registry=registry)
        self.batch_size = Histogram(
            "vlgpt_chat_batch_size",
            "chat requests answered by one batched call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        self.tokens_per_s = Gauge("vlgpt_tokens_per_second", "the last job's rate", registry=registry)
        self.images_per_s = Gauge("vlgpt_images_per_second", "the last image job's rate", registry=registry)

    def job_done(self, result: object, seconds: float) -> None:
        """Count what one model job produced: an Output (chat) or a list of images (draw, edit)."""
        self.jobs.labels("done").inc()
        self.busy.inc(seconds)
        images = result if isinstance(result, list) else getattr(result, "images", [])
        tokens = getattr(result, "completion_tokens", 0)
        self.prompt_tokens.inc(getattr(result, "prompt_tokens", 0))
        self.completion_tokens.inc(tokens)
        self.images.inc(len(images))
        if seconds > 0 and tokens:
            self.tokens_per_s.set(tokens / seconds)
        if seconds > 0 and images:
            self.images_per_s.set(len(images) / seconds)

    def request_done(self, path: str, status: int, started: float) -> None:
        route = path if path in ROUTES else "other"
        self.latency.labels(route).observe(time.monotonic() - started)
        self.requests.labels(route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware: each HTTP request's status and latency, a stream's until its last byte."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [500]

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.request_done(scope["path"], status[0], started)
