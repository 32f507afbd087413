"""npm packages the interop tests run (conformance suite, TypeScript SDKs), installed once into .cache.

Each :class:`NpmPackages` names pinned packages and a directory under ``.cache/``; the first
run that needs them installs them there with npm (into a staging directory renamed into place,
so concurrent runs never see half an install) and later runs reuse them. A test that needs
them gets them when they are installed, or when ``MCP_QUEUE_TEST_REQUIRE_CONFORMANCE=1`` (CI
sets it) allows the install; otherwise it is skipped, and with the variable set an install
that cannot happen fails the test instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
REQUIRE_ENV = "MCP_QUEUE_TEST_REQUIRE_CONFORMANCE"
INSTALL_TIMEOUT_S = 300


def unavailable(reason: str) -> NoReturn:
    """Skip (or, with ``MCP_QUEUE_TEST_REQUIRE_CONFORMANCE=1``, fail) the test for ``reason``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def _version(modules: Path, name: str) -> str | None:
    try:
        return str(json.loads((modules / name / "package.json").read_text()).get("version"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class NpmPackages:
    """Pinned npm packages in ``directory`` (``node_modules`` inside it)."""

    what: str  #: what they are, for skip messages
    directory: Path
    packages: dict[str, str]  #: name -> exact version
    #: A further check of an install (e.g. that a shipped binary runs), given its directory.
    check: Callable[[Path], bool] = field(default=lambda _: True)

    @property
    def modules(self) -> Path:
        return self.directory / "node_modules"

    def installed(self, directory: Path | None = None) -> bool:
        where = directory or self.directory
        ok = all(_version(where / "node_modules", n) == v for n, v in self.packages.items())
        return ok and self.check(where)

    def ensure(self) -> Path:
        """The ``node_modules`` holding the packages: reused, installed if allowed, or the test skips."""
        if self.installed():
            return self.modules
        if os.environ.get(REQUIRE_ENV) != "1":
            pytest.skip(f"{self.what} is not installed in {self.directory} (set {REQUIRE_ENV}=1 to fetch it with npm)")
        npm = shutil.which("npm")
        if npm is None:
            unavailable(f"npm is not installed: cannot fetch {self.what}")
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=self.directory.parent))
        try:
            (staging / "package.json").write_text('{"private": true}\n')
            command = [npm, "install", "--no-audit", "--no-fund", "--no-save"]
            command += [f"{name}@{version}" for name, version in self.packages.items()]
            try:
                done = subprocess.run(
                    command, cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                unavailable(f"npm install of {self.what} took over {INSTALL_TIMEOUT_S} s (registry unreachable?)")
            if done.returncode != 0 or not self.installed(staging):
                unavailable(f"npm could not install {self.what}: {done.stderr.strip()[-500:]}")
            try:
                staging.rename(self.directory)  # atomic: a concurrent run that won keeps its own copy
            except OSError:
                if not self.installed():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.modules


def node() -> str:
    """The ``node`` on PATH (the TypeScript clients need >= 20), or the test skips."""
    found = shutil.which("node")
    if found is None:
        unavailable("node is not installed: cannot run the TypeScript clients")
    return found
