"""The browser UI in headless Chromium against a real server: pick an image, caption it, ask about it,
draw, edit, and check that what the page shows is what the model answers. Chromium is driven over
the DevTools protocol on a pipe (--remote-debugging-pipe), so no websocket library is needed."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
from serve_helpers import ServerThread, decode_png, png_bytes, scene

import vlgpt
from vlgpt.serve.outputs import ContentWriter
from vlgpt.serve.settings import ServeSettings

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
WIDTH, HEIGHT = 1280, 860


class Chromium:
    """Headless Chromium over the DevTools protocol: JSON messages ending in NUL, sent on the browser's
    fd 3 and read from its fd 4."""

    def __init__(self, profile_dir: str):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # bash puts the pipe ends on fds 3 and 4 (dash takes single-digit fds only)
        command = [
            "bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            command, pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id = b"", 0

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30
    ) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:  # events in between are not needed: the test polls the page's state instead
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._in], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        return Page(
            self, self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        )

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError, EOFError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._out)
        os.close(self._in)


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session=self.session)

    def eval(self, expression: str):
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not (value := self.eval(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)
        return value

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && !!document.getElementById('log')")

    def pick_file(self, selector: str, path: str) -> None:
        handle = self.send("Runtime.evaluate", {"expression": f"document.querySelector({selector!r})"})
        self.send("DOM.setFileInputFiles", {"files": [path], "objectId": handle["result"]["objectId"]})

    def type_and_click(self, field: str, text: str, button: str) -> None:
        self.eval(f"document.getElementById({field!r}).value = {json.dumps(text)}")
        self.click(button)

    def click(self, button: str) -> None:
        self.eval(f"document.getElementById({button!r}).click()")
        self.wait("!state.busy")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])


@pytest.fixture(scope="module")
def pipeline(serve_run):
    return vlgpt.load(serve_run)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(str(tmp_path_factory.mktemp("chromium-profile")))
    yield chromium
    chromium.close()


def _rendered(output) -> str:
    writer = ContentWriter()
    for kind, value in output.parts:
        writer.add(kind, value)
    return writer.content


def turns(page: Page, kind: str) -> int:
    return page.eval(f"document.querySelectorAll('.turn.{kind}').length")


def last_image(page: Page) -> np.ndarray:
    src = page.eval("Array.from(document.querySelectorAll('.turn.assistant img')).pop().src")
    assert src.startswith("data:image/png;base64,")
    return np.asarray(decode_png(src.split(",", 1)[1]))


def test_ui_captions_asks_draws_and_edits(pipeline, browser, tmp_path):
    image_path = tmp_path / "scene.png"
    image_path.write_bytes(png_bytes(scene(2)))
    image_part = {"type": "image", "image": scene(2)}
    with ServerThread(pipeline, ServeSettings()) as server:
        page = browser.open_page()
        page.goto(server.url + "/")
        page.wait("document.getElementById('status').textContent === 'model vlgpt ready'")

        page.pick_file("#file", str(image_path))
        page.wait("document.getElementById('preview').src.startsWith('data:image/png;base64,')")
        page.click("caption")  # streamed from /v1/chat/completions
        caption = pipeline.chat(
            [{"role": "user", "content": [image_part, {"type": "text", "text": "Describe the image."}]}],
            max_new_tokens=48,
        )
        history = page.eval("state.history")
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[1]["content"] == _rendered(caption)
        assert turns(page, "assistant") == 1 and turns(page, "error") == 0

        page.eval("document.getElementById('keep-history').checked = false")
        page.type_and_click("question", "How many shapes are there?", "ask")
        answer = pipeline.chat(
            [
                {
                    "role": "user",
                    "content": [image_part, {"type": "text", "text": "How many shapes are there?"}],
                }
            ],
            max_new_tokens=48,
        )
        assert page.eval("state.history[3].content") == _rendered(answer)

        page.type_and_click("draw-prompt", "a red circle", "draw")  # /v1/images/generations
        assert np.array_equal(last_image(page), np.asarray(pipeline.imagine("a red circle")))

        page.type_and_click("edit-prompt", "Make the circle blue.", "edit")  # multipart /v1/images/edits
        assert np.array_equal(
            last_image(page), np.asarray(pipeline.edit(scene(2), "Make the circle blue.", refuse=False))
        )
        assert turns(page, "assistant") == 4 and turns(page, "error") == 0

        shot = page.screenshot()
        (tmp_path / "serve-ui.png").write_bytes(shot)
        assert shot.startswith(b"\x89PNG") and decode_png(base64.b64encode(shot)).size == (WIDTH, HEIGHT)


def test_ui_shows_server_errors_and_uses_the_api_key(pipeline, browser):
    with ServerThread(pipeline, ServeSettings(api_key="ui-key", max_prompt_chars=50)) as server:
        page = browser.open_page()
        page.goto(server.url + "/")
        assert page.wait("document.getElementById('status').textContent.startsWith('not connected')")
        assert "missing or wrong API key" in page.eval("document.getElementById('status').textContent")

        page.eval(
            "const key = document.getElementById('key'); key.value = 'ui-key';"
            "key.dispatchEvent(new Event('change'))"
        )
        page.wait("document.getElementById('status').textContent === 'model vlgpt ready'")
        page.type_and_click("draw-prompt", "a long prompt " * 10, "draw")
        assert turns(page, "error") == 1
        assert "at most 50 (--max-prompt-chars)" in page.eval(
            "document.querySelector('.turn.error').textContent"
        )
        page.type_and_click("draw-prompt", "a blue star", "draw")
        assert turns(page, "assistant") == 1 and turns(page, "error") == 1


def test_a_run_report_fits_1200_px_without_scrolling_sideways(serve_run, browser, tmp_path):
    """`vlgpt report`'s page (every stage's curves in one figure, example cards, metric tables) at
    1,200 px: nothing wider than the window, and the curves image is on the page."""
    from vlgpt.eval.report import write_run_report

    out = write_run_report(serve_run, n=2, out=tmp_path / "report.html")
    page = browser.open_page()
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    page.send("Page.navigate", {"url": out.as_uri()})
    page.wait("document.readyState === 'complete' && document.images.length > 0")
    page.wait("Array.from(document.images).every(i => i.complete)")
    assert page.eval("document.body.innerText").count("Training curves") == 1
    assert page.eval("document.documentElement.scrollWidth") <= 1200
    widest = page.eval("Math.max(...Array.from(document.images).map(i => i.getBoundingClientRect().right))")
    assert widest <= 1200
    assert decode_png(base64.b64encode(page.screenshot()).decode()).size == (1200, 900)
