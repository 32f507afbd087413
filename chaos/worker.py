"""A worker process: a small agent loop driving an MCP server subprocess over stdio.

Per task: checkpoint (renews the lease), work, (a task with a limit key: checkpoint again,
logged "held": proof it was still held then), a "side effect" (a JSONL line), then ack
with a result; poison tasks always ``fail_task``; "flaky" tasks fail their first attempt
on purpose; "bulk" tasks are acked together with ``ack(task_ids=...)``. Every ack's outcome
is logged: acked, already_completed, rejected (not the lease holder), error, or unknown.

Signals: SIGTERM stops the loop gracefully; SIGUSR1 arms a crash: after its next side
effect the worker SIGKILLs its server and itself, before acking.

Usage (started by ``chaos.run``): ``python -m chaos.worker CONFIG NAME [SKEW]``; SKEW (e.g.
"+120s") runs the MCP server under libfaketime with its clock that far off (clock_skew fault).

A NAME starting with "h" is an HTTP agent: instead of a server subprocess it holds one MCP
session (SDK client, ``mode="legacy"``) on the run's shared Streamable HTTP server, with the
tokens file's worker principal; its holder is ``http/crew/<hash of its session>``, which it
logs once (op "holder", from ``get_task``). When the server goes away (killed and restarted
by the nemesis) the agent exits and the supervisor starts a new one: a new session.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, TextContent

from chaos import sagas
from chaos.common import HTTP_PRINCIPAL, ROOT, Config, Jsonl, faketime_lib, wall_ms
from chaos.procs import children, listening, wait_until

CALL_TIMEOUT_S = 10.0  #: longer than any pause the nemesis injects
ACK_RETRY_S = 3.0  #: how long an ack with an unknown outcome is retried
READ_COUNT = 3
READ_BLOCK_MS = 200
HTTP_CONNECT_S = 30.0  #: how long an HTTP agent waits for the shared server to listen (a restart)

Kind = Literal["ok", "rejected", "error", "unknown"]


@dataclass
class Reply:
    kind: Kind
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""


class Flags:
    stop = False
    crash = False


def _on_signal(signum: int, _frame: object) -> None:
    if signum == signal.SIGUSR1:
        Flags.crash = True
    else:
        Flags.stop = True


def classify_error(text: str) -> Kind:
    """Map a tool error's text to an outcome (the server's messages, see mcp_queue_server.core.scripts)."""
    if "(retryable)" in text:
        return "unknown"  # Redis unreachable or timed out: the call may or may not have landed
    if "leased by another worker" in text or "not leased to you" in text or "is already completed" in text:
        return "rejected"  # fencing: a stale holder (lease expired, task taken or finished) changed nothing
    return "error"


def server_env(cfg: Config, name: str, skew: str = "") -> dict[str, str]:
    lib = faketime_lib()
    faked = {"LD_PRELOAD": lib, "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "1"} if skew and lib else {}
    return cfg.child_env(
        **faked,
        MCP_QUEUE_REDIS_URL=cfg.redis_url,
        MCP_QUEUE_KEY_PREFIX=cfg.key_prefix,
        MCP_QUEUE_CONSUMER=name,
        MCP_QUEUE_ROLE="worker",
        MCP_QUEUE_LEASE_MS=str(cfg.lease_ms),
        MCP_QUEUE_SOCKET_TIMEOUT_S=str(cfg.socket_timeout_s),
        MCP_QUEUE_RETRY_BACKOFF_MS=str(cfg.retry_backoff_ms),
        MCP_QUEUE_MAX_ATTEMPTS=str(cfg.healthy_max_attempts),
        MCP_QUEUE_LOG_LEVEL="WARNING",
        MCP_QUEUE_DATA_DIR=os.path.join(cfg.workdir, "unused"),
    )


def crash_now(log: Jsonl, cfg: Config, name: str) -> None:
    """SIGKILL our MCP server's group, then our own: no graceful hand-back of held tasks."""
    log.write(op="self_crash", worker=name, t=cfg.since_start())
    for child in children(os.getpid()):
        os.killpg(os.getpgid(child), signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


class Worker:
    def __init__(self, cfg: Config, name: str, client: Client, log: Jsonl) -> None:
        self.cfg, self.name, self.client, self.log = cfg, name, client, log
        self.rng = random.Random(f"{cfg.seed}/{name}")
        self.holder_logged = not name.startswith("h")  #: HTTP agents log their session's holder once

    async def call(self, tool: str, args: dict[str, Any]) -> Reply:
        try:
            # The outer bound is a backstop: if it fires the session is suspect and the
            # worker exits (the supervisor starts a fresh one).
            with anyio.fail_after(CALL_TIMEOUT_S + 5):
                res = await self.client.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT_S)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise  # the server is gone: exit, the supervisor starts a fresh worker
            # e.g. the request timed out: the outcome is unknown
            return Reply("unknown", text=f"MCPError {exc.code}: {exc.message}"[:200])
        if not res.is_error:
            return Reply("ok", dict(res.structured_content or {}))
        text = " ".join(c.text for c in res.content if isinstance(c, TextContent))
        return Reply(classify_error(text), text=text[:300])

    async def call_retrying(self, tool: str, args: dict[str, Any], within: float) -> tuple[Reply, int, Kind]:
        """Retry unknown outcomes (safe: these tools are idempotent or fenced) for ``within`` s.
        Returns the last reply, the number of tries and the first outcome."""
        deadline = time.monotonic() + within
        tries, first = 0, None
        while True:
            reply = await self.call(tool, args)
            tries += 1
            first = first or reply.kind
            if reply.kind != "unknown" or time.monotonic() >= deadline:
                return reply, tries, first
            await anyio.sleep(0.1)  # Redis is down or paused; the deadline bounds the retries

    def now(self) -> float:
        return self.cfg.since_start()

    async def run(self) -> None:
        reads = 0
        while not Flags.stop:
            reads += 1
            args = {"count": READ_COUNT, "block_ms": READ_BLOCK_MS, "lease_ms": self.cfg.lease_ms}
            if reads % 4 == 0:
                args["prefer_high_priority"] = False  # serve the low stream too
            sent = wall_ms()
            reply = await self.call("read_tasks", args)
            got = wall_ms()
            if reply.kind != "ok":
                self.log.write(op="read_failed", worker=self.name, outcome=reply.kind, error=reply.text, t=self.now())
                await anyio.sleep(0.1)  # Redis is unreachable; back off a little
                continue
            bulk: list[dict[str, Any]] = []
            # The tasks of a batch run concurrently, like an agent working on several at once.
            async with anyio.create_task_group() as tg:
                for task in reply.data["tasks"]:
                    # sent/got: this (unfaked) process's clock around the read, i.e. Redis's; lease and
                    # now: the deadline and the clock the server's read script reported.
                    lease = task["lease_expires_at"]
                    self.log.write(op="deliver", id=task["task_id"], attempt=task["attempt"], worker=self.name,
                                   checkpoint=task["checkpoint"] is not None, t=self.now(), sent=sent, got=got,
                                   lease=lease, now=lease - self.cfg.lease_ms)  # fmt: skip
                    if "schedule" in task["payload"]:  # chaos/schedules.py checks what each slot stood for
                        self.log.write(op="scheduled", id=task["task_id"], missed=task["payload"]["schedule"]["missed"])
                    tg.start_soon(self.handle, task, bulk)
            if bulk:
                await self.ack_bulk(bulk)

    async def handle(self, task: dict[str, Any], bulk: list[dict[str, Any]]) -> None:
        """Process one task; a "bulk" task is added to ``bulk``, acked after the batch."""
        tid, attempt, payload = task["task_id"], task["attempt"], task["payload"]
        kind = payload.get("kind")
        if payload.get("poison") or (kind == "flaky" and attempt == 1):
            reason = "poison payload" if payload.get("poison") else "flaky: first attempt fails on purpose"
            fail: dict[str, Any] = {"task_id": tid, "error": reason}
            if kind == "saga":
                fail["retry"] = False  # a saga's poison step dead-letters at once: its saga compensates
            reply, tries, _ = await self.call_retrying("fail_task", fail, ACK_RETRY_S)
            self.log.write(op="fail", id=tid, attempt=attempt, worker=self.name, outcome=reply.kind,
                           status=reply.data.get("status"), tries=tries, error=reply.text, t=self.now())  # fmt: skip
            return
        if payload.get("saga", {}).get("compensate"):  # the checker compares it with the step's result
            self.log.write(op="undo", id=tid, attempt=attempt, worker=self.name, result=payload["saga"]["result"],
                           t=self.now())  # fmt: skip
        ck = {"task_id": tid, "data": {"step": "started", "worker": self.name}}
        ck_sent = wall_ms()
        reply, _, _ = await self.call_retrying("checkpoint", ck, self.cfg.lease_ms / 1000)
        if reply.kind == "ok" and reply.data.get("lease_expires_at") is None:
            # Saved, but the lease is not ours any more (the task was requeued meanwhile).
            reply = Reply("rejected", text="checkpoint saved without a lease")
        if reply.kind != "ok":
            # Lost the lease already (or Redis is away): leave it, it will be delivered again.
            self.log.write(op="skip", id=tid, attempt=attempt, worker=self.name, outcome=reply.kind,
                           error=reply.text, t=self.now())  # fmt: skip
            return
        self.log.write(op="work", id=tid, attempt=attempt, worker=self.name, t=self.now(), ck_sent=ck_sent,
                       lease=reply.data.get("lease_expires_at"))  # fmt: skip
        if not self.holder_logged:
            info = await self.call("get_task", {"task_id": tid})
            holder = info.data.get("lease_holder") if info.kind == "ok" else None
            # None: the call failed (Redis paused) or the lease moved on meanwhile; ask on the next task.
            if holder is not None:
                self.holder_logged = True
                self.log.write(op="holder", worker=self.name, id=tid, holder=holder, t=self.now())
        await anyio.sleep(int(payload.get("work_ms", 20)) / 1000)  # the "work"
        if payload.get("limit_key"):
            await self.prove_held(tid, attempt)
        self.log.write(op="effect", id=tid, attempt=attempt, worker=self.name, t=self.now())
        if Flags.crash:
            crash_now(self.log, self.cfg, self.name)
        if kind == "bulk":
            bulk.append(task)
            return
        result: dict[str, Any] = {"worker": self.name, "attempt": attempt}
        if "fanout" in payload:
            result["children"] = len(payload["fanout"]["results"])
        reply, tries, first = await self.call_retrying("ack", {"task_id": tid, "result": result}, ACK_RETRY_S)
        status = reply.data.get("status") if reply.kind == "ok" else reply.kind
        fan = reply.data.get("fanout") or {}
        self.log.write(op="ack", id=tid, attempt=attempt, worker=self.name, outcome=status, first=first,
                       tries=tries, finished_parent=bool(fan.get("finished_parent")), parent=fan.get("parent_task_id"),
                       error=reply.text, t=self.now())  # fmt: skip
        if self.cfg.split_sagas and status == "acked":
            await self.second_call(payload)

    async def prove_held(self, tid: str, attempt: int) -> None:
        """A keyed task: checkpoint again after the work, so the checker knows (by Redis's clock:
        the renewed lease minus lease_ms) that this worker still held it then."""
        ck = {"task_id": tid, "data": {"step": "worked", "worker": self.name}}
        reply = await self.call("checkpoint", ck)
        lease = reply.data.get("lease_expires_at") if reply.kind == "ok" else None
        if lease is not None:
            self.log.write(op="held", id=tid, attempt=attempt, worker=self.name, t=self.now(), lease=lease)

    async def second_call(self, payload: dict[str, Any]) -> None:
        """Negative control (--split-sagas): a saga step's transition needs a second call after its
        ack, and a crash may come between the two."""
        saga = payload.get("saga", {})
        if saga.get("step") and not saga.get("compensate"):
            if self.rng.random() < sagas.SPLIT_CRASH_SHARE:
                crash_now(self.log, self.cfg, self.name)
            await sagas.advance(self.cfg, saga["saga_id"], saga["step"])

    async def ack_bulk(self, tasks: list[dict[str, Any]]) -> None:
        ids = [t["task_id"] for t in tasks]
        reply, tries, first = await self.call_retrying("ack", {"task_ids": ids}, ACK_RETRY_S)
        items = {i["task_id"]: i for i in reply.data.get("tasks", [])} if reply.kind == "ok" else {}
        for t in tasks:
            item = items.get(t["task_id"])
            if item is None:
                outcome, error = reply.kind, reply.text
            elif item["status"] == "error":
                error = item.get("error") or ""
                outcome = classify_error(error)
            else:
                outcome, error = item["status"], ""
            self.log.write(op="ack", id=t["task_id"], attempt=t["attempt"], worker=self.name, outcome=outcome,
                           first=first, tries=tries, bulk=True, error=error, t=self.now())  # fmt: skip


def http_token(cfg: Config) -> str:
    with open(cfg.tokens_file) as f:
        return str(json.load(f)[HTTP_PRINCIPAL]["token"])


async def work_http(cfg: Config, name: str, log: Jsonl) -> None:
    """An HTTP agent: one MCP session on the shared server, as the tokens file's worker principal."""
    token = http_token(cfg)
    with anyio.fail_after(HTTP_CONNECT_S):
        await wait_until(lambda: listening(cfg.http_port), 0.1)  # the server may be restarting
    # The SDK's own timeouts: 30 s, and 5 minutes between events of an SSE stream.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        transport = streamable_http_client(cfg.http_url, http_client=http)
        async with Client(transport, mode="legacy", read_timeout_seconds=30.0) as client:
            log.write(op="start", worker=name, pid=os.getpid(), http=True, t=cfg.since_start())
            await Worker(cfg, name, client, log).run()
    log.write(op="stop", worker=name, t=cfg.since_start())


async def work(cfg: Config, name: str, skew: str) -> None:
    log = Jsonl(cfg.logs / f"worker-{name}.jsonl")
    if name.startswith("h"):
        return await work_http(cfg, name, log)
    # A negative control's servers run a broken variant: their own (possibly skewed) clock, or
    # limits counted outside the read script.
    env = server_env(cfg, name, skew)
    params = StdioServerParameters(command=sys.executable, args=["-m", cfg.server_module], env=env, cwd=ROOT)
    # read_timeout_seconds also bounds initialize (a cold server start under load).
    async with Client(params, read_timeout_seconds=30.0) as client:
        log.write(op="start", worker=name, pid=os.getpid(), server=children(os.getpid()), skew=skew,
                  t=cfg.since_start())  # fmt: skip
        await Worker(cfg, name, client, log).run()
    log.write(op="stop", worker=name, t=cfg.since_start())


def main() -> None:
    # Handlers first: the nemesis may signal soon after the start.
    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    cfg = Config.load(sys.argv[1])
    anyio.run(work, cfg, sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")


if __name__ == "__main__":
    main()
