"""Headless Chromium for tests: found on PATH (or the test is skipped), driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no port, no websocket library), and a small
PNG reader to check its screenshots.

Every wait is bounded: each command and event wait has a deadline, and the browser process is
killed when the session ends.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Keep Chromium off the (closed) network and away from a user profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
#: Chromium reads commands on fd 3 and writes replies on fd 4; this moves the pipes there, then execs it.
_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)


def chromium() -> str:
    """The browser binary; skips the test without one, unless CI requires it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("MCP_QUEUE_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """One run of Chromium's own headless commands (``--dump-dom``, ``--screenshot``), bounded."""
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=60, check=True
    )


class CdpError(RuntimeError):
    pass


class Browser:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, process: subprocess.Popen[bytes], commands: int, replies: int, timeout: float) -> None:
        self.process = process
        self._out, self._in = commands, replies
        self._buffer = b""
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self.timeout = timeout
        self.session = ""

    # -- the protocol ------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from chromium in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise CdpError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Run one command (on the page's session unless ``session=False``) and return its result."""
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._events.append(reply)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The next ``event`` of the page (events seen before the last :meth:`forget` do not count)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, seen in enumerate(self._events):
                if seen["method"] == event:
                    del self._events[: i + 1]
                    params: dict[str, Any] = seen.get("params", {})
                    return params
            self._events.clear()
            reply = self._read(deadline)
            if "method" in reply:
                self._events.append(reply)

    def forget(self) -> None:
        self._events.clear()

    # -- what the tests do -------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.forget()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value in the page (the page itself has no script)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def submit_form(self, field: str, value: str) -> None:
        """Type ``value`` into the page's ``field`` and submit its form; wait for the next page."""
        self.forget()
        self.evaluate(
            f"document.querySelector('input[name={field}]').value = {json.dumps(value)}; "
            "document.querySelector('form').requestSubmit(); true"
        )
        self.wait_for("Page.loadEventFired")

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path, width: int, height: int, *, dark: bool) -> bytes:
        """The viewport at ``width`` x ``height`` in the light or dark colour scheme, as PNG."""
        mobile = width < 600
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        scheme = "dark" if dark else "light"
        self.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
        shot = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(shot)
        return shot


@contextmanager
def browser(binary: str, profile: Path, *, timeout: float = 30) -> Iterator[Browser]:
    """A headless Chromium with one blank page, killed at the end of the block."""
    commands_r, commands_w = os.pipe()
    replies_r, replies_w = os.pipe()
    args = [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
    log = (profile.parent / f"{profile.name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", _TRAMPOLINE, str(commands_r), str(replies_w), *args],
        pass_fds=(commands_r, replies_w),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    os.close(commands_r)
    os.close(replies_w)
    page = Browser(process, commands_w, replies_r, timeout)
    try:
        target = page.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        page.session = page.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        page.send("Page.enable")
        yield page
    finally:
        os.close(commands_w)
        process.kill()
        process.wait(timeout=30)
        os.close(replies_r)
        log.close()


# -- PNG -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    pixels: list[bytes]  #: one row per entry, RGB(A) bytes

    def colours(self, step: int = 4) -> set[bytes]:
        """The distinct colours of every ``step``-th pixel of every ``step``-th row."""
        bpp = len(self.pixels[0]) // self.width
        return {row[x : x + 3] for row in self.pixels[::step] for x in range(0, len(row), bpp * step)}

    def mean(self) -> float:
        """Mean channel value over all pixels (0 black .. 255 white)."""
        total = sum(sum(row) for row in self.pixels)
        return total / (len(self.pixels) * len(self.pixels[0]))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png(data: bytes) -> Image:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's screenshots are)."""
    assert data.startswith(PNG_MAGIC), "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), f"unexpected PNG format {depth=} {interlace=}"
    assert colour in (2, 6), f"unexpected PNG colour type {colour}"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + previous[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                upper_left = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], upper_left)) & 0xFF
        previous = bytes(line)
        rows.append(previous)
    return Image(width, height, rows)
