"""The HTTP API: `create_app(pipeline, settings)` -> a FastAPI app.

Routes (OpenAI's where one exists, so the official clients work with `base_url`):

    GET  /                      the browser UI (one self-contained page)
    GET  /health                liveness, never behind the API key
    GET  /v1/models             the one model served
    GET  /metrics               Prometheus text format: queue, latency, tokens and images (serve/metrics.py)
    POST /v1/chat/completions   messages with text and image_url parts (data: URIs); stream: true -> SSE
    POST /v1/images/generations prompt -> n PNGs as b64_json
    POST /v1/images/edits       multipart: image file + prompt -> n PNGs as b64_json

The pipeline is only ever called on the worker's single thread (greedy chat requests that wait
together are answered in one batch: serve/batching.py); images are decoded beforehand on
Starlette's thread pool, so a bad image is refused (400) before the request takes a queue slot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..inference.generate import Output
from .batching import ChatBatcher
from .errors import APIError, error_response, error_type, install_error_handlers
from .inputs import (
    chat_messages,
    check_max_tokens,
    check_model,
    check_prompt_length,
    load_images,
    load_upload,
)
from .metrics import CONTENT_TYPE, RequestTimer, ServerMetrics
from .middleware import BearerAuth, BodyLimit
from .outputs import ContentWriter, chat_chunk, chat_completion, completion_id, images_response, usage
from .schemas import ChatCompletionRequest, ImageGenerationRequest, drawing_options
from .settings import ServeSettings
from .worker import Cancelled, Job, ModelWorker, timeout_error


def create_app(pipeline, settings: ServeSettings) -> FastAPI:
    """An app serving `pipeline` (a vlgpt.inference.pipeline.Pipeline, or anything with its methods)."""
    metrics = ServerMetrics()
    worker = ModelWorker(settings.queue_size, settings.timeout_s, metrics)
    metrics.queue_depth.set_function(lambda: worker.pending)
    metrics.queue_capacity.set(worker.capacity)
    batches = settings.max_batch > 1 and hasattr(pipeline, "chat_batch")  # else one request at a time
    batcher = ChatBatcher(pipeline, settings.max_batch, metrics) if batches else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown()

    app = FastAPI(
        title="vlgpt", version="1", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.settings, app.state.worker, app.state.pipeline = settings, worker, pipeline
    app.state.metrics = metrics
    install_error_handlers(app, settings.max_body_bytes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key:  # outside the body limit: a client without the key learns nothing
        app.add_middleware(BearerAuth, key=settings.api_key)
    app.add_middleware(RequestTimer, metrics=metrics)  # refused requests are timed too
    if settings.cors_origins:  # added last, so it is outermost and answers preflights itself
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    ui_page, ui_headers = _ui_page()
    image_size = pipeline.codec.output_size  # what it draws (a diffusion decoder's own size)

    @app.exception_handler(Cancelled)
    async def client_gone(request: Request, error: Cancelled) -> JSONResponse:
        return error_response(499, f"request cancelled: {error}", code="client_closed_request")

    @app.get("/", include_in_schema=False)
    async def ui() -> HTMLResponse:
        return HTMLResponse(ui_page, headers=ui_headers)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(settings)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict:
        check_model(model_id, settings)
        return _model_card(settings)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model, settings)
        worker.ensure_room()
        budget = check_max_tokens(body, settings)
        sampling = {
            "max_new_tokens": budget[0],
            "temperature": body.temperature,
            "top_p": body.top_p,
            "top_k": body.top_k,
            "seed": body.seed or 0,
            "stop": body.stop_strings(),
            **body.decoding_options(),
            **{k: v for k, v in (("steps", body.steps), ("guidance", body.guidance)) if v is not None},
        }
        messages = await run_in_threadpool(load_images, chat_messages(body, settings), settings)
        if body.stream:
            return await _stream_chat(
                pipeline,
                worker,
                request,
                messages,
                sampling,
                settings.model_name,
                include_usage=bool(body.stream_options and body.stream_options.include_usage),
                budget=budget,
            )

        if batcher is not None and batcher.eligible(sampling, body.stream):
            entry = batcher.entry(messages, sampling)
            job, result = worker.submit(batcher.work(entry))
            batcher.enqueue(entry, job)
            output = await worker.watch(job, result, request.is_disconnected)
        else:

            def work(job: Job) -> Output:
                return pipeline.chat(messages, should_stop=job.should_stop, **sampling)

            output = await worker.call(work, request.is_disconnected)
        if output.finish_reason == "cancelled":
            raise timeout_error(settings.timeout_s)
        return chat_completion(output, settings.model_name, budget)

    @app.post("/v1/images/generations")
    async def images_generations(body: ImageGenerationRequest, request: Request) -> dict:
        check_model(body.model, settings)
        _check_image_options(body.n, body.size, body.response_format, body.stream, image_size, settings)
        check_prompt_length(len(body.prompt), settings, "prompt")
        drawing = body.drawing()
        draw = lambda i: pipeline.imagine(body.prompt, **{**drawing, "seed": drawing["seed"] + i})
        return images_response(await worker.call(_draw(draw, body.n), request.is_disconnected))

    @app.post("/v1/images/edits")
    async def images_edits(request: Request) -> dict:
        worker.ensure_room()
        data, prompt, n, drawing = await _read_edit_form(request, settings, image_size)
        image = await run_in_threadpool(load_upload, data, settings, "image")
        # An image route always draws (refusals come as words in chat answers).
        draw = lambda i: pipeline.edit(
            image, prompt, refuse=False, **{**drawing, "seed": drawing["seed"] + i}
        )
        return images_response(await worker.call(_draw(draw, n), request.is_disconnected))

    return app


def _ui_page() -> tuple[str, dict[str, str]]:
    """The page and its headers: a CSP that runs only the page's own inline script and style (by hash)
    and lets it talk to this server alone, so nothing from elsewhere can load or run."""
    page = resources.files(__package__).joinpath("ui.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _model_card(settings: ServeSettings) -> dict:
    return {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "vlgpt"}


def _check_image_options(
    n: int,
    size: str | None,
    response_format: str | None,
    stream: bool,
    image_size: int,
    settings: ServeSettings,
) -> None:
    if not 1 <= n <= settings.max_n:
        raise APIError(
            400,
            f"n is {n}; this server draws 1 to {settings.max_n} images a request (--max-n)",
            param="n",
            code="n_out_of_range",
        )
    native = f"{image_size}x{image_size}"
    if size not in (None, "auto", native):
        raise APIError(
            400,
            f"size {size!r} is not available: this model draws {native} images; send "
            f"size={native!r} or leave it out",
            param="size",
        )
    if response_format not in (None, "b64_json"):
        raise APIError(
            400,
            f"response_format {response_format!r} is not supported; use 'b64_json' "
            "(this server keeps no files to link to)",
            param="response_format",
        )
    if stream:
        raise APIError(400, "streaming images is not supported; leave 'stream' out", param="stream")


async def _read_edit_form(
    request: Request, settings: ServeSettings, image_size: int
) -> tuple[bytes, str, int, dict]:
    """The multipart form the openai client sends for images.edit -> (image bytes, prompt, n, and the
    drawing's seed, steps and guidance: extensions for a diffusion decoder)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(
            400,
            "send the edit as multipart/form-data with an 'image' file and a 'prompt' field",
            code="invalid_content_type",
        )
    async with request.form(max_files=4, max_fields=32) as form:
        files = [f for f in form.getlist("image") + form.getlist("image[]") if isinstance(f, UploadFile)]
        if len(files) != 1:
            raise APIError(400, f"send exactly one 'image' file to edit, got {len(files)}", param="image")
        if form.get("mask") is not None:
            raise APIError(
                400, "masks are not supported: VL-GPT edits the whole image by the instruction", param="mask"
            )
        prompt = form.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise APIError(400, "'prompt' is required: the edit instruction", param="prompt")
        check_model(_text_field(form, "model"), settings)
        n = _int_field(form, "n", 1)
        _check_image_options(
            n,
            _text_field(form, "size"),
            _text_field(form, "response_format"),
            _text_field(form, "stream") in ("true", "True", "1"),
            image_size,
            settings,
        )
        check_prompt_length(len(prompt), settings, "prompt")
        seed, steps = _int_field(form, "seed", 0), _int_field(form, "steps", 0) or None
        guidance = _float_field(form, "guidance")
        if seed < 0 or (steps is not None and not 1 <= steps <= 1000):
            raise APIError(400, "seed must be >= 0 and steps in 1..1000", param="steps")
        if guidance is not None and not 0 <= guidance <= 50:
            raise APIError(400, f"guidance must be in [0, 50], got {guidance}", param="guidance")
        return await files[0].read(), prompt, n, drawing_options(seed, steps, guidance)


def _draw(make_image: Callable[[int], object], n: int) -> Callable[[Job], list]:
    """A worker job drawing n images (`make_image(i)` for i < n), checking for cancellation between them."""

    def work(job: Job) -> list:
        images = []
        for i in range(n):
            if job.should_stop():
                raise Cancelled("stopped between images")
            images.append(make_image(i))
        return images

    return work


def _text_field(form, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a text field, not a file", param=name)
    return value


def _float_field(form, name: str) -> float | None:
    value = _text_field(form, name)
    try:
        return None if value in (None, "") else float(value)
    except ValueError:
        raise APIError(400, f"'{name}' must be a number, got {value[:20]!r}", param=name) from None


def _int_field(form, name: str, default: int) -> int:
    value = _text_field(form, name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise APIError(400, f"'{name}' must be an integer, got {value[:20]!r}", param=name) from None


# --------------------------------------------------------------------------- streaming


async def _stream_chat(
    pipeline,
    worker: ModelWorker,
    request: Request,
    messages: list[dict],
    sampling: dict,
    model: str,
    include_usage: bool,
    budget: tuple[int, int | None] = (0, None),
) -> StreamingResponse:
    """Start the job, wait for its first piece (errors before it are plain JSON errors), then stream SSE."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def push(kind: str, value: object) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, (kind, value))

    def work(job: Job) -> Output:
        return pipeline.chat(messages, on_part=push, should_stop=job.should_stop, **sampling)

    job, result = worker.submit(work)
    result.add_done_callback(lambda done: pieces.put_nowait(("end", done)))
    first = await worker.watch(job, pieces.get(), request.is_disconnected)
    if first[0] == "end":  # ended before its first piece: a plain JSON error (or an empty answer)
        try:
            first[1].result()
        except Cancelled:
            raise timeout_error(worker.timeout_s) from None

    async def events() -> AsyncIterator[str]:
        chunk_id, created, writer = completion_id(), int(time.time()), ContentWriter()
        item = first
        try:
            yield _sse(chat_chunk(chunk_id, model, created, {"role": "assistant", "content": ""}))
            while item[0] != "end":
                yield _sse(chat_chunk(chunk_id, model, created, {"content": writer.add(*item)}))
                item = await _next_piece(pieces, job)
            try:
                output: Output = item[1].result()
            except Cancelled:
                output = Output(finish_reason="cancelled")
            if output.finish_reason == "cancelled":  # only the deadline ends a job whose client is still here
                yield _sse(_error_body(timeout_error(worker.timeout_s)))
            else:
                yield _sse(chat_chunk(chunk_id, model, created, {}, finish_reason=output.finish_reason))
                if include_usage:
                    yield _sse(chat_chunk(chunk_id, model, created, {}, usage_=usage(output, budget)))
            yield "data: [DONE]\n\n"
        except APIError as error:
            yield _sse(_error_body(error))
            yield "data: [DONE]\n\n"
        except Exception:
            yield _sse(_error_body(APIError(500, "internal server error; the server log has the details")))
            yield "data: [DONE]\n\n"
            raise
        finally:
            job.cancelled.set()  # a client that left mid-stream stops the generation at the next token

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _next_piece(pieces: asyncio.Queue, job: Job) -> tuple[str, object]:
    """The next piece of a stream; past the deadline the job is told to stop and its end still arrives."""
    remaining = job.deadline - time.monotonic()
    try:
        return await asyncio.wait_for(pieces.get(), timeout=max(remaining, 0) + 1.0)
    except TimeoutError:
        job.cancelled.set()
        return await pieces.get()


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _error_body(error: APIError) -> dict:
    return {
        "error": {
            "message": error.message,
            "type": error_type(error.status),
            "param": error.param,
            "code": error.code,
        }
    }
