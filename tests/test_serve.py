"""The HTTP API end to end: a real uvicorn server on loopback, the official `openai` client, and the
limits of docs/serving.md (RELIABILITY.md items 8-13), on one tiny run trained through the CLI."""

from __future__ import annotations

import functools
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from serve_helpers import (
    GatedPipeline,
    ServerThread,
    bomb_png,
    data_uri,
    decode_png,
    png_bytes,
    scene,
    wait_for,
)

import vlgpt
from vlgpt.inference.generate import Output, TextStream
from vlgpt.serve.outputs import ContentWriter
from vlgpt.serve.settings import ServeSettings, ServeSettingsError, is_loopback

LIMITS = ServeSettings(
    max_body_mb=1, max_images=2, max_prompt_chars=200, max_tokens=32, max_n=2, max_pixels=1_000_000
)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def pipeline(serve_run):
    return vlgpt.load(serve_run)


@pytest.fixture(scope="module")
def server(pipeline):
    with ServerThread(pipeline, LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)


def chat_body(content, **extra) -> dict:
    return {"model": "vlgpt", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def rendered(parts) -> str:
    writer = ContentWriter()
    for kind, value in parts:
        writer.add(kind, value)
    return writer.content


def markdown_images(content: str) -> list:
    return [
        decode_png(b64)
        for b64 in re.findall(r"!\[image\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", content)
    ]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """OpenAI's error shape, no stack trace."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "Traceback" not in response.text and 'File "' not in response.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# --------------------------------------------------------------------------- the official client


def test_openai_client_chat_with_an_image(client, pipeline):
    text = {"type": "text", "text": "Describe the image."}
    response = client.chat.completions.create(
        model="vlgpt",
        max_tokens=12,
        messages=[{"role": "user", "content": [image_part(data_uri(png_bytes(scene()))), text]}],
    )
    direct = pipeline.chat(
        [{"role": "user", "content": [{"type": "image", "image": scene()}, text]}], max_new_tokens=12
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == rendered(direct.parts)
    assert choice.finish_reason == direct.finish_reason in ("stop", "length")
    assert (
        response.usage.prompt_tokens == direct.prompt_tokens >= pipeline.codec.num_tokens + 2
    )  # the image is in
    assert response.usage.completion_tokens == direct.completion_tokens > 0
    assert response.model == "vlgpt" and response.id.startswith("chatcmpl-")


def test_contrastive_decoding_through_the_api_answers_as_the_pipeline_does(client, pipeline):
    """`decoding: vcd` (an extension field, through the official client's extra_body) gives the
    pipeline's own contrastive answer, as an ordinary completion."""
    text = {"type": "text", "text": "Is there a red circle?"}
    vcd = {"decoding": "vcd", "vcd_alpha": 1.0, "vcd_beta": 0.1}
    response = client.chat.completions.create(
        model="vlgpt",
        max_tokens=6,
        messages=[{"role": "user", "content": [image_part(data_uri(png_bytes(scene()))), text]}],
        extra_body=vcd,
    )
    direct = pipeline.chat(
        [{"role": "user", "content": [{"type": "image", "image": scene()}, text]}], max_new_tokens=6, **vcd
    )
    assert response.choices[0].message.content == rendered(direct.parts)


def test_lmms_eval_request_shapes_all_get_an_answer(client, server, pipeline):
    """lmms-eval's `openai_compatible` client: the question before the image, max_tokens=1024 (over this
    server's limit: clamped, not refused), 64 requests at once (queued, not refused), and some clients
    send image_url as a plain string. Every one gets 200 and the answer the model gives in the order
    it was trained on (image first)."""
    text = {"type": "text", "text": "Describe the image."}
    url = data_uri(png_bytes(scene()))
    direct = rendered(
        pipeline.chat(
            [{"role": "user", "content": [{"type": "image", "image": scene()}, text]}],
            max_new_tokens=LIMITS.max_tokens,
        ).parts
    )
    assert direct

    def ask(_: int):
        return client.chat.completions.create(
            model="vlgpt",
            max_tokens=1024,
            temperature=0,
            messages=[{"role": "user", "content": [text, image_part(url)]}],
        )

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    assert [a.choices[0].message.content for a in answers] == [direct] * 64
    extra = answers[0].usage.model_extra
    assert extra == {"max_tokens_requested": 1024, "max_tokens_used": LIMITS.max_tokens}, extra
    plain = {"type": "image_url", "image_url": url}
    response = httpx.post(
        server.url + CHAT, json=chat_body([text, plain], max_tokens=LIMITS.max_tokens), timeout=60
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["choices"][0]["message"]["content"] == direct
    assert "max_tokens_requested" not in response.json()["usage"]  # nothing was clamped


def test_streaming_joins_to_the_non_streamed_answer(client, server):
    messages = [{"role": "user", "content": "Draw: a red circle above a blue star"}]
    full = client.chat.completions.create(model="vlgpt", messages=messages, max_tokens=24)
    chunks = list(
        client.chat.completions.create(
            model="vlgpt",
            messages=messages,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == full.choices[0].message.content
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        full.choices[0].finish_reason
    ]
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens
    for image in markdown_images(
        full.choices[0].message.content
    ):  # whatever the tiny model drew is a real PNG
        assert image.size == (32, 32)

    raw = httpx.post(server.url + CHAT, json=chat_body("hello", stream=True), timeout=30)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


class DrawingPipeline:
    """Answers every chat with text, a real drawn image, and text: pins down how images travel."""

    def __init__(self, pipeline):
        self.inner, self.codec = pipeline, pipeline.codec

    def chat(self, messages, on_part=None, should_stop=None, **sampling):
        parts = [("text", "Here it is:"), ("image", self.inner.imagine("a red circle")), ("text", "Done.")]
        for part in parts:
            if on_part:
                on_part(*part)
        return Output(parts=parts, prompt_tokens=5, completion_tokens=9)


def test_drawn_images_travel_as_markdown_data_uris(pipeline):
    with ServerThread(DrawingPipeline(pipeline)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "Draw a red circle."}]
        content = client.chat.completions.create(model="vlgpt", messages=messages).choices[0].message.content
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="vlgpt", messages=messages, stream=True)
        )
    assert streamed == content
    assert re.fullmatch(
        r"Here it is:\n\n!\[image\]\(data:image/png;base64,[A-Za-z0-9+/=]+\)\n\nDone\.", content
    )
    (image,) = markdown_images(content)
    assert np.array_equal(np.asarray(image), np.asarray(pipeline.imagine("a red circle")))


def test_assistant_images_are_read_back_as_images(client, pipeline):
    drawn = data_uri(png_bytes(scene(1)))

    def prompt_tokens(assistant: str) -> int:
        messages = [
            {"role": "user", "content": "Draw: a star"},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": "Describe it."},
        ]
        return client.chat.completions.create(
            model="vlgpt", messages=messages, max_tokens=1
        ).usage.prompt_tokens

    assert (
        prompt_tokens(f"A star.\n\n![image]({drawn})") - prompt_tokens("A star.")
        == pipeline.codec.num_tokens + 2
    )


def test_openai_client_images_generate(client, pipeline):
    result = client.images.generate(model="vlgpt", prompt="a red circle", n=2)
    expected = np.asarray(pipeline.imagine("a red circle"))
    assert len(result.data) == 2
    for item in result.data:
        assert np.array_equal(np.asarray(decode_png(item.b64_json)), expected)


def test_openai_client_images_edit(client, pipeline):
    result = client.images.edit(
        model="vlgpt", image=("scene.png", png_bytes(scene()), "image/png"), prompt="Make the circle blue."
    )
    (item,) = result.data
    expected = np.asarray(pipeline.edit(scene(), "Make the circle blue.", refuse=False))
    assert np.array_equal(np.asarray(decode_png(item.b64_json)), expected)


def test_models_health_and_page(client, server):
    assert [m.id for m in client.models.list()] == ["vlgpt"]
    assert client.models.retrieve("vlgpt").id == "vlgpt"
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"https?://", page.text), "the page must not load anything from elsewhere"


# --------------------------------------------------------------------------- bad input


def chunked(total: int, size: int = 64 * 1024):
    yield b'{"model": "vlgpt", "messages": ['
    for _ in range(total // size):
        yield b" " * size
    yield b"]}"


def edit_form(image: tuple | None, **fields) -> dict:
    return {
        "files": {"image": image} if image else {"unused": ("x.txt", b"x", "text/plain")},
        "data": {"prompt": "Make it blue.", **fields},
    }


BAD_REQUESTS = {
    "truncated PNG": (
        CHAT,
        lambda: {"json": chat_body([image_part(data_uri(png_bytes(scene())[:80]))])},
        400,
        "invalid_image",
    ),
    "decompression bomb": (
        CHAT,
        lambda: {"json": chat_body([image_part(data_uri(bomb_png()))])},
        400,
        "image_too_large",
    ),
    "bad data URI": (
        CHAT,
        lambda: {"json": chat_body([image_part("data:image/png;base64,@@not base64@@")])},
        400,
        "invalid_image",
    ),
    "text/html MIME type": (
        CHAT,
        lambda: {"json": chat_body([image_part(data_uri(b"<script>x</script>", "text/html"))])},
        400,
        "invalid_image",
    ),
    "oversize body (Content-Length)": (
        CHAT,
        lambda: {"content": b" " * (2 * 2**20), "headers": {"content-type": "application/json"}},
        413,
        "body_too_large",
    ),
    "oversize body (chunked)": (
        CHAT,
        lambda: {"content": chunked(2 * 2**20), "headers": {"content-type": "application/json"}},
        413,
        "body_too_large",
    ),
    "too many images": (
        CHAT,
        lambda: {"json": chat_body([image_part(data_uri(png_bytes(scene())))] * 3)},
        400,
        "too_many_images",
    ),
    "over-long prompt": (CHAT, lambda: {"json": chat_body("x" * 201)}, 400, "prompt_too_long"),
    "unknown model": (CHAT, lambda: {"json": {**chat_body("hi"), "model": "gpt-4o"}}, 404, "model_not_found"),
    "remote image URL": (
        CHAT,
        lambda: {"json": chat_body([image_part("http://127.0.0.1:9/scene.png")])},
        400,
        "remote_images_disabled",
    ),
    "file URL": (
        CHAT,
        lambda: {"json": chat_body([image_part("file:///etc/passwd")])},
        400,
        "invalid_image_url",
    ),
    "not JSON": (
        CHAT,
        lambda: {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        None,
    ),
    "unknown part type": (CHAT, lambda: {"json": chat_body([{"type": "video", "url": "x"}])}, 400, None),
    "n too large": (
        "/v1/images/generations",
        lambda: {"json": {"prompt": "a star", "n": 3}},
        400,
        "n_out_of_range",
    ),
    "response_format url": (
        "/v1/images/generations",
        lambda: {"json": {"prompt": "a", "response_format": "url"}},
        400,
        None,
    ),
    "size the model cannot draw": (
        "/v1/images/generations",
        lambda: {"json": {"prompt": "a", "size": "1024x1024"}},
        400,
        None,
    ),
    "edit without an image": ("/v1/images/edits", lambda: edit_form(None), 400, None),
    "edit of a bomb": (
        "/v1/images/edits",
        lambda: edit_form(("b.png", bomb_png(), "image/png")),
        400,
        "image_too_large",
    ),
    "edit of HTML": (
        "/v1/images/edits",
        lambda: edit_form(("x.png", b"<html></html>", "image/png")),
        400,
        "invalid_image",
    ),
    "edit sent as JSON": ("/v1/images/edits", lambda: {"json": {"prompt": "x"}}, 400, "invalid_content_type"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(server, case):
    path, request, status, code = BAD_REQUESTS[case]
    started = server.worker.started
    assert_error(httpx.post(server.url + path, timeout=30, **request()), status, code)
    assert server.worker.started == started, "a refused request must never reach the model"
    ok = httpx.post(server.url + CHAT, json=chat_body("Describe the image.", max_tokens=1), timeout=30)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


def test_unknown_routes_and_methods_use_the_error_shape(server):
    assert_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_error(httpx.get(server.url + CHAT), 405)


# --------------------------------------------------------------------------- auth, CORS, binding


def test_api_key_guards_every_route_but_health_and_page(pipeline):
    with ServerThread(pipeline, ServeSettings(api_key="s3cret-key")) as server:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-key"},
            {"Authorization": "Bearer s3cret-key-and-more"},
        ):
            response = httpx.get(server.url + "/v1/models", headers=headers)
            assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.post(server.url + CHAT, json=chat_body("hi")), 401, "invalid_api_key")
        assert_error(httpx.get(server.url + "/metrics"), 401, "invalid_api_key")
        assert httpx.get(server.url + "/health").status_code == 200
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and "s3cret" not in page.text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret-key", max_retries=0)
        assert [m.id for m in good.models.list()] == ["vlgpt"]
        assert (
            good.chat.completions.create(
                model="vlgpt", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            .choices[0]
            .message.role
            == "assistant"
        )


def test_no_cors_headers_unless_origins_are_configured(server, pipeline):
    plain = httpx.get(server.url + "/v1/models", headers={"Origin": "http://app.test"})
    assert plain.status_code == 200 and not any(h.startswith("access-control-") for h in plain.headers)
    with ServerThread(pipeline, ServeSettings(cors_origins=("http://app.test",))) as cors:
        allowed = httpx.get(cors.url + "/v1/models", headers={"Origin": "http://app.test"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.test"
        preflight = httpx.options(
            cors.url + CHAT,
            headers={
                "Origin": "http://app.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert (
            preflight.status_code == 200
            and preflight.headers["access-control-allow-origin"] == "http://app.test"
        )
        other = httpx.get(cors.url + "/v1/models", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_public_bind_needs_an_api_key():
    with pytest.raises(ServeSettingsError, match="refusing to bind 0.0.0.0 without an API key"):
        ServeSettings(host="0.0.0.0")
    assert ServeSettings(host="0.0.0.0", api_key="k").host == "0.0.0.0"
    with pytest.raises(ServeSettingsError, match="would let any web page"):
        ServeSettings(cors_origins=("*",))
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.2", "example.com")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_refuses_a_public_bind_and_serves_on_loopback(serve_run):
    env = {k: v for k, v in os.environ.items() if k != "VLGPT_API_KEY"}
    command = [sys.executable, "-m", "vlgpt", "serve", "--ckpt", str(serve_run)]
    refused = subprocess.run(
        command + ["--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert refused.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in refused.stderr
    assert "Traceback" not in refused.stderr

    port = _free_port()
    process = subprocess.Popen(
        command + ["--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "vlgpt serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}{CHAT}", json=chat_body("hi", max_tokens=2), timeout=30)
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode in (0, 130), output[-2000:]
    assert "127.0.0.1" in output and "Traceback" not in output


def test_remote_images_only_when_allowed(pipeline, tmp_path):
    (tmp_path / "scene.png").write_bytes(png_bytes(scene()))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    images = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path))
    )
    threading.Thread(target=images.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{images.server_address[1]}/scene.png"
    try:
        with ServerThread(pipeline, ServeSettings(allow_remote_images=True)) as server:
            by_url = httpx.post(
                server.url + CHAT, json=chat_body([image_part(url)], max_tokens=1), timeout=30
            )
            inline = httpx.post(
                server.url + CHAT,
                json=chat_body([image_part(data_uri(png_bytes(scene())))], max_tokens=1),
                timeout=30,
            )
            assert by_url.status_code == 200, by_url.text
            assert by_url.json()["usage"] == inline.json()["usage"]
            missing = httpx.post(server.url + CHAT, json=chat_body([image_part(url + ".gone")]), timeout=30)
            assert_error(missing, 400, "image_fetch_failed")
    finally:
        images.shutdown()


# --------------------------------------------------------------------------- queue, timeout, cancellation


def _post_in_thread(url: str, results: dict, name: str, **kwargs) -> threading.Thread:
    def post():
        results[name] = httpx.post(url + CHAT, json=chat_body("hello", max_tokens=2), timeout=30, **kwargs)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def test_queue_overflow_gets_429_with_retry_after(pipeline):
    gated = GatedPipeline(pipeline)
    with ServerThread(gated, ServeSettings(queue_size=1)) as server:
        results: dict = {}
        first = _post_in_thread(server.url, results, "running")
        wait_for(gated.entered.is_set, what="the first request to reach the model")
        second = _post_in_thread(server.url, results, "queued")
        wait_for(lambda: server.worker.pending == 2, what="the second request to queue")
        refused = httpx.post(server.url + CHAT, json=chat_body("hello"), timeout=10)
        error = assert_error(refused, 429, "queue_full")
        assert error["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
        gated.gate.set()
        first.join(30)
        second.join(30)
    assert results["running"].status_code == results["queued"].status_code == 200
    assert gated.calls == 2


def scrape(url: str) -> dict:
    """GET /metrics, parsed by prometheus-client's own parser -> {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_the_queue_requests_tokens_and_images(pipeline):
    gated = GatedPipeline(pipeline)
    with ServerThread(gated, ServeSettings(queue_size=1)) as server:
        results: dict = {}
        first = _post_in_thread(server.url, results, "running")
        wait_for(gated.entered.is_set, what="the first request to reach the model")
        second = _post_in_thread(server.url, results, "queued")
        wait_for(lambda: server.worker.pending == 2, what="the second request to queue")
        busy = scrape(server.url)
        assert busy[("vlgpt_queue_depth", ())] == 2 and busy[("vlgpt_queue_capacity", ())] == 2
        assert_error(httpx.post(server.url + CHAT, json=chat_body("hello")), 429, "queue_full")
        gated.gate.set()
        first.join(30)
        second.join(30)
        drawn = httpx.post(server.url + "/v1/images/generations", json={"prompt": "a red circle", "n": 2})
        assert drawn.status_code == 200
        after = scrape(server.url)
    chat = (("route", CHAT),)
    tokens = sum(results[k].json()["usage"]["completion_tokens"] for k in ("running", "queued"))
    assert after[("vlgpt_queue_depth", ())] == 0
    assert after[("vlgpt_requests_total", (*chat, ("status", "200")))] == 2
    assert after[("vlgpt_requests_total", (*chat, ("status", "429")))] == 1
    assert after[("vlgpt_request_duration_seconds_count", chat)] == 3
    assert after[("vlgpt_jobs_total", (("outcome", "done"),))] == 3
    assert after[("vlgpt_completion_tokens_total", ())] == tokens > 0
    assert after[("vlgpt_images_total", ())] == 2 and after[("vlgpt_images_per_second", ())] > 0
    assert after[("vlgpt_model_busy_seconds_total", ())] > 0


def test_waiting_chat_requests_are_answered_in_one_batch(pipeline):
    """Four greedy requests queue behind a running one; when its turn comes the first of them
    answers all four in one batched call, each exactly as alone. With --max-batch 1 each runs alone."""
    questions = ["Describe the image.", "What colour is the circle?", "How many shapes are there?", "hello"]
    expected = [
        pipeline.chat([{"role": "user", "content": q}], max_new_tokens=6) for q in ["first", *questions]
    ]
    for max_batch, batches in ((16, [1, 4]), (1, [])):
        gated = GatedPipeline(pipeline)
        with ServerThread(gated, ServeSettings(max_batch=max_batch)) as server:
            with ThreadPoolExecutor(5) as pool:
                post = lambda q: httpx.post(server.url + CHAT, json=chat_body(q, max_tokens=6), timeout=30)
                first = pool.submit(post, "first")
                wait_for(gated.entered.is_set, what="the first request to reach the model")
                rest = [pool.submit(post, q) for q in questions]
                wait_for(lambda: server.worker.pending == 5, what="four requests to queue")
                gated.gate.set()
                answers = [f.result().json() for f in [first, *rest]]
            sizes = scrape(server.url)
        assert gated.batches == batches and gated.calls == (2 if batches else 5)
        for answer, direct in zip(answers, expected):
            assert answer["choices"][0]["message"]["content"] == rendered(direct.parts)
            assert answer["usage"]["completion_tokens"] == direct.completion_tokens
        assert sizes[("vlgpt_chat_batch_size_count", ())] == len(batches)


def test_a_batched_answer_that_draws_is_finished_alone(pipeline):
    from vlgpt.serve.batching import ChatBatcher
    from vlgpt.serve.worker import Job

    class Drawing:  # a model whose batched answers all start an image
        def chat_batch(self, conversations, **sampling):
            return [Output(parts=[("text", "A plan.")], wants_image=True) for _ in conversations]

        def chat(self, messages, should_stop=None, **sampling):
            return Output(parts=[("text", "A plan."), ("image", "drawn")], completion_tokens=12)

    batcher = ChatBatcher(Drawing(), max_batch=4)
    sampling = {"temperature": 0.0, "stop": (), "seed": 0, "max_new_tokens": 8}
    entries = [batcher.entry([{"role": "user", "content": f"q{i}"}], sampling) for i in range(3)]
    jobs = [Job(deadline=time.monotonic() + 60) for _ in entries]
    for entry, job in zip(entries, jobs):
        batcher.enqueue(entry, job)
    jobs[2].cancelled.set()  # a request that left while it waited is not answered
    out = batcher.work(entries[0])(jobs[0])
    assert out.images == ["drawn"] and entries[1].result.images == ["drawn"] and entries[2].result is None


def test_a_queued_request_whose_client_left_never_runs(pipeline):
    gated = GatedPipeline(pipeline)
    with ServerThread(gated, ServeSettings(queue_size=2)) as server:
        results: dict = {}
        first = _post_in_thread(server.url, results, "running")
        wait_for(gated.entered.is_set, what="the first request to reach the model")
        with pytest.raises(httpx.ReadTimeout):  # this client gives up while its request waits in the queue
            httpx.post(server.url + CHAT, json=chat_body("hello"), timeout=httpx.Timeout(10, read=0.5))
        wait_for(lambda: server.worker.abandoned == 1, what="the server to notice the client left")
        gated.gate.set()
        first.join(30)
        wait_for(lambda: server.worker.pending == 0, what="the queue to drain")
        assert results["running"].status_code == 200
        assert gated.calls == 1 and server.worker.started == 1 and server.worker.skipped == 1


class EndlessPipeline:
    """Streams text until told to stop (at most 20 s), and records that it was told."""

    def __init__(self, codec):
        self.codec, self.stopped = codec, threading.Event()

    def chat(self, messages, on_part=None, should_stop=None, **sampling):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not should_stop():
            if on_part:
                on_part("text", "tick ")
            time.sleep(0.01)
        self.stopped.set()
        return Output(parts=[("text", "tick")], finish_reason="cancelled")


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_stops_its_generation(pipeline, stream):
    endless = EndlessPipeline(pipeline.codec)
    with ServerThread(endless) as server:
        if stream:
            with httpx.stream(
                "POST", server.url + CHAT, json=chat_body("go", stream=True), timeout=10
            ) as response:
                assert response.status_code == 200
                assert next(response.iter_lines()).startswith("data: ")
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + CHAT, json=chat_body("go"), timeout=httpx.Timeout(10, read=0.5))
        wait_for(endless.stopped.is_set, timeout=5, what="the generation to stop")
        assert httpx.get(server.url + "/health").status_code == 200


def test_a_request_past_the_timeout_gets_504(pipeline):
    gated = GatedPipeline(pipeline)
    with ServerThread(gated, ServeSettings(timeout_s=0.3)) as server:
        slow = httpx.post(server.url + CHAT, json=chat_body("hello"), timeout=10)
        assert_error(slow, 504, "timeout")
        gated.gate.set()
        assert httpx.post(server.url + CHAT, json=chat_body("hello"), timeout=10).status_code == 200


class BrokenPipeline:
    def __init__(self, codec):
        self.codec = codec

    def chat(self, messages, **kwargs):
        raise RuntimeError("secret internals at /srv/model/weights")


def test_unexpected_errors_are_a_plain_500(pipeline):
    with ServerThread(BrokenPipeline(pipeline.codec)) as server:
        response = httpx.post(server.url + CHAT, json=chat_body("hello"), timeout=10)
        error = assert_error(response, 500)
        assert error["type"] == "server_error" and "secret" not in response.text
        assert httpx.get(server.url + "/health").status_code == 200


# --------------------------------------------------------------------------- streaming pieces


def test_text_stream_holds_back_what_may_still_change():
    sent: list[str] = []
    stream = TextStream(("STOP",), lambda kind, piece: sent.append(piece))
    stream.update("Hello S")
    assert "".join(sent) == "Hello "  # "S" may begin "STOP"
    stream.update("Hello ST")
    assert "".join(sent) == "Hello "
    stream.update("Hello STa")
    assert "".join(sent) == "Hello STa"
    stream.update("Hello STa caf\ufffd")  # half of a UTF-8 character
    assert "".join(sent) == "Hello STa caf"
    stream.update("Hello STa café", final=True)
    assert "".join(sent) == "Hello STa café"


def test_generator_streams_its_parts_and_stops_when_asked(pipeline):
    messages = [{"role": "user", "content": "Draw: a red circle above a blue star"}]
    full = pipeline.chat(messages, max_new_tokens=24)
    pieces: list = []
    streamed = pipeline.chat(
        messages, max_new_tokens=24, on_part=lambda kind, value: pieces.append((kind, value))
    )
    assert rendered(pieces) == rendered(full.parts) == rendered(streamed.parts)
    assert full.finish_reason in ("stop", "length")

    at_once = pipeline.chat(messages, max_new_tokens=24, should_stop=lambda: True)
    assert at_once.finish_reason == "cancelled" and at_once.parts == [] and at_once.completion_tokens == 0

    polls = 0

    def stop_after_three() -> bool:
        nonlocal polls
        polls += 1
        return polls > 3

    cut = pipeline.chat(messages, max_new_tokens=24, should_stop=stop_after_three)
    longest_three = 3 * (pipeline.codec.num_tokens + 2)
    assert cut.completion_tokens <= longest_three
    if full.completion_tokens > longest_three:  # the full answer needed more than three steps
        assert cut.finish_reason == "cancelled" and polls == 4
