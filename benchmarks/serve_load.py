"""Load on `vlgpt serve`: latency (p50, p95) and throughput for caption and imagine requests at 1, 4,
16 and 64 concurrent clients, with and without dynamic batching, over loopback only.

    python benchmarks/serve_load.py --run runs/serve-bench [--requests 200] [--max-seconds 60]
        [--max-batch 1 16] [--tasks caption imagine]

For each --max-batch value, starts `vlgpt serve --max-batch N` on 127.0.0.1 with a free port in a
subprocess (a run folder without a trained instruct stage gets the tiny preset trained into it
first, 6 steps a stage), sends a warm-up request, then for each task and concurrency issues at
most --requests requests (and none after --max-seconds), and prints one JSON line per setting.
`--max-batch 1` is one model call at a time; with more, greedy chat requests that wait together
are decoded as one batch (serve/batching.py). Image generation is never batched.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

from vlgpt.world.dataset import ShapesWorld

STAGES = ("clip", "tokenizer", "decoder", "pretrain", "instruct")


def ensure_run(run: Path) -> None:
    if (run / "instruct" / "model" / "model.safetensors").is_file():
        return
    for stage in STAGES:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vlgpt",
                "train",
                stage,
                "--preset",
                "tiny",
                "--out",
                str(run),
                "--steps",
                "6",
                "--save-every",
                "0",
            ],
            check=True,
            capture_output=True,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scene_data_uri() -> str:
    world = ShapesWorld("val", 64, 64)
    buffer = io.BytesIO()
    world.image(world[0]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def requests_for(task: str, max_tokens: int) -> tuple[str, dict]:
    if task == "caption":
        content = [
            {"type": "image_url", "image_url": {"url": scene_data_uri()}},
            {"type": "text", "text": "Describe the image."},
        ]
        return "/v1/chat/completions", {
            "model": "vlgpt",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}],
        }
    return "/v1/images/generations", {"model": "vlgpt", "prompt": "a red circle left of a blue star", "n": 1}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


async def load(url: str, path: str, body: dict, concurrency: int, total: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors, issued, tokens = 0, 0, 0
    stop_at = time.monotonic() + max_seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors, issued, tokens
        while issued < total and time.monotonic() < stop_at:
            issued += 1
            start = time.perf_counter()
            response = await client.post(path, json=body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
                tokens += response.json().get("usage", {}).get("completion_tokens", 0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    done = len(latencies)
    return {
        "requests": done,
        "errors": errors,
        "wall_s": round(wall, 3),
        "p50_s": round(percentile(latencies, 0.50), 4) if done else None,
        "p95_s": round(percentile(latencies, 0.95), 4) if done else None,
        "throughput_rps": round(done / wall, 2) if wall else None,
        **({"mean_completion_tokens": round(tokens / done, 1)} if done and tokens else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", default="runs/serve-bench", help="run folder (tiny preset trained here if empty)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrent clients"
    )
    parser.add_argument(
        "--max-batch", type=int, nargs="+", default=[1, 16], help="server's --max-batch, one server each"
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=("caption", "imagine"), default=["caption", "imagine"], help="tasks"
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per setting (at most 1000)")
    parser.add_argument(
        "--max-seconds", type=float, default=60, help="stop issuing after this long (at most 600)"
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of a caption request")
    args = parser.parse_args()
    total, max_seconds = min(args.requests, 1000), min(args.max_seconds, 600)
    run = Path(args.run)
    ensure_run(run)
    for max_batch in args.max_batch:
        with tempfile.TemporaryFile(mode="w+") as log:  # uvicorn logs every request; an unread pipe fills
            if serve_and_measure(run, log, args, total, max_seconds, max_batch):
                return 1
    return 0


def serve_and_measure(
    run: Path, log: IO[str], args: argparse.Namespace, total: int, max_seconds: float, max_batch: int
) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlgpt",
            "serve",
            "--ckpt",
            str(run),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--queue-size",
            str(max(args.concurrency)),
            "--max-batch",
            str(max_batch),
            "--timeout",
            "300",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "VLGPT_API_KEY"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                print(log.read()[-3000:] or "the server did not start", file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for task in args.tasks:
            path, body = requests_for(task, args.max_tokens)
            httpx.post(url + path, json=body, timeout=120).raise_for_status()  # warm-up
            for concurrency in args.concurrency:
                figures = asyncio.run(load(url, path, body, concurrency, total, max_seconds))
                print(
                    json.dumps(
                        {
                            "benchmark": "serve_load",
                            "task": task,
                            "concurrency": concurrency,
                            **figures,
                            "max_batch": max_batch,
                            "run": str(run),
                        }
                    ),
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
