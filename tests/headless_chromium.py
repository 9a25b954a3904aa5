"""Open a page in headless Chromium and report what a reader would see go wrong: console
errors, uncaught exceptions, failed loads, images that did not decode; plus a full-page
screenshot. Speaks the DevTools protocol over `--remote-debugging-pipe` (NUL-terminated JSON
on file descriptors 3 and 4), so it needs no websocket client and no open port.

    python tests/headless_chromium.py PAGE.html SHOT.png    # prints the findings as JSON
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROKEN_IMAGES = ("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                 ".map(i => i.alt || i.src.slice(0, 60))")


def find_chromium() -> str | None:
    return os.environ.get("OMPIPE_CHROMIUM") or next(filter(None, map(shutil.which, NAMES)), None)


@dataclass
class Rendered:
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    title: str = ""
    screenshot: bytes = b""


class Chromium:
    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ompipe-chromium-")
        to_browser_read, self._write = os.pipe()
        self._read, from_browser_write = os.pipe()

        def fds_3_and_4() -> None:  # the pipe ends where --remote-debugging-pipe expects them
            high_in, high_out = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Python opens every descriptor non-inheritable, so close_fds=False passes on only 3 and 4.
            preexec_fn=fds_3_and_4, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            event = self._receive()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium stopped answering")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._read, self._write):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def render(page: Path, binary: str, width: int = 1280) -> Rendered:
    browser = Chromium(binary)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        rendered = Rendered()
        evaluate = lambda expression: browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                                   session=session)["result"]["value"]
        rendered.broken_images = evaluate(BROKEN_IMAGES)
        rendered.images = evaluate("document.images.length")
        rendered.title = evaluate("document.title")
        height = evaluate("Math.ceil(document.documentElement.scrollHeight)")
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        rendered.screenshot = base64.b64decode(shot["data"])
        rendered.console_errors = [_describe(event) for event in browser.events if _is_error(event)]
        return rendered
    finally:
        browser.close()


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return method == "Runtime.exceptionThrown"


def _describe(event: dict) -> str:
    params = event.get("params", {})
    if event["method"] == "Runtime.consoleAPICalled":
        return "console: " + " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
    if event["method"] == "Log.entryAdded":
        return f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip()
    return "exception: " + params.get("exceptionDetails", {}).get("text", "")


if __name__ == "__main__":
    binary = find_chromium()
    if not binary:
        sys.exit("no chromium found (apt-get install chromium)")
    result = render(Path(sys.argv[1]), binary)
    Path(sys.argv[2]).write_bytes(result.screenshot)
    print(json.dumps({"console_errors": result.console_errors, "broken_images": result.broken_images,
                      "images": result.images, "title": result.title}, indent=2))
