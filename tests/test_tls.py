"""TLS: the queue over ``rediss://`` with a private CA and a client certificate (when the
redis-server binary is built with TLS, as Debian's is)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from mcp_queue_server.testing import RedisProc


def _certs(d: Path) -> None:
    """A CA, and a server and a client certificate it signs (for 127.0.0.1)."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


async def test_the_mcp_flow_runs_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    _certs(tmp_path)
    server = RedisProc(tmp_path / "redis")
    tls_port = server.port
    server.extra_args = ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(tmp_path / "server.crt"),
                         "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
                         "--tls-auth-clients", "yes"]  # fmt: skip
    server.client_kwargs = {
        "ssl": True,
        "ssl_ca_certs": str(tmp_path / "ca.crt"),
        "ssl_certfile": str(tmp_path / "client.crt"),
        "ssl_keyfile": str(tmp_path / "client.key"),
    }
    try:
        server.start()
    except RuntimeError:
        pytest.skip(f"{server.binary} cannot serve TLS (built without it)")
    try:
        query = "&".join(f"{k}={v}" for k, v in server.client_kwargs.items() if k != "ssl")
        url = f"rediss://127.0.0.1:{tls_port}/0?{query}"
        settings = Settings(redis_url=url, key_prefix=f"tls{uuid.uuid4().hex[:6]}")
        async with Client(build_server(settings)) as client:
            made = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {"secure": True}})
            assert not made.is_error, made.content
            read = await client.call_tool("read_tasks", {})
            assert read.structured_content is not None
            [task] = read.structured_content["tasks"]
            assert task["payload"] == {"secure": True}
            acked = await client.call_tool("ack", {"task_id": task["task_id"]})
            assert not acked.is_error
    finally:
        server.stop()
