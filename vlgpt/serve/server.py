"""`vlgpt serve`: load a run and serve it with uvicorn until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from .settings import ServeSettings


def serve(
    ckpt: str | Path,
    settings: ServeSettings,
    device: str = "cpu",
    dtype: str = "fp32",
    quantize: str | None = None,
) -> int:
    import uvicorn

    from ..inference.pipeline import load
    from .app import create_app

    app = create_app(load(ckpt, device, dtype, quantize), settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    auth = "API key required" if settings.api_key else "no API key (loopback only)"
    print(
        f"vlgpt serve: {ckpt} ({device}, {dtype}{', int8 weights' if quantize else ''}) "
        f"as model {settings.model_name!r} "
        f"on http://{host}:{settings.port}/ "
        f"(browser UI at /, OpenAI API at /v1; {auth})",
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return 0
