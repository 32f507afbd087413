-- enqueue: create tasks (one or a batch) unless their id already exists.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, threshold, default_max_attempts, n, max_length (0: none),
--       then n x (task_id, type, priority, payload_json, delay_ms, max_attempts or "",
--       deadline_ms or "": see track_deadline in _lib.lua, trace or "": the enqueuing call's trace
--       context (tracing.py), kept as the task's 'trace' field, limit_key or "": see set_limit).
-- Returns: n x {code, state}: code OK (1) created, DUPLICATE (2) the id exists and
--          nothing changed; state is the task's state after the call; or {FULL, length}:
--          the new tasks would take the queue (waiting + delayed) past max_length, and
--          none was created (a batch is taken whole or not at all).
local threshold, default_max, n, max_length = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
if max_length > 0 then
  local new = 0
  for i = 0, n - 1 do
    if redis.call('EXISTS', tkey(ARGV[9 + i * 9])) == 0 then new = new + 1 end
  end
  local length = queue_length()
  if new > 0 and length + new > max_length then return {FULL, length} end
end
-- The streams and their consumer groups are made together (ensure_groups), looked for only
-- when a stream is missing: XADD NOMKSTREAM adds nothing then (Redis 6.2+), and a delayed task
-- looks once per call. Saves two EXISTS on every enqueue (issue 17).
local grouped = false
local function add(stream, id)
  local entry = redis.call('XADD', stream, 'NOMKSTREAM', '*', 'id', id)
  if entry then return entry end
  ensure_groups()
  grouped = true
  return redis.call('XADD', stream, '*', 'id', id)
end
local out = {}
local created = 0
for i = 0, n - 1 do
  local o = 9 + i * 9
  local id, delay = ARGV[o], tonumber(ARGV[o + 4])
  local tk = tkey(id)
  local state = redis.call('HGET', tk, 'state')
  if state then
    out[#out + 1] = {DUPLICATE, state}
  else
    local priority = tonumber(ARGV[o + 2])
    local max = ARGV[o + 5]
    if max == '' then max = default_max end
    local stream = priority >= threshold and 'high' or 'low'
    -- One HSET per task: the stream entry (or the delay) is decided before the record is written.
    local state, field, value = 'delayed', 'run_at', now + delay
    if delay > 0 then
      if not grouped then ensure_groups(); grouped = true end
      redis.call('ZADD', K[3], value, id)
    else
      state, field, value = 'queued', 'entry', add(stream_key(stream), id)
    end
    redis.call('HSET', tk, unpack(payload_fields({'type', ARGV[o + 1], 'priority', priority, 'stream', stream,
      'attempt', 0, 'max_attempts', max, 'created_at', now, 'state', state, field, value}, ARGV[o + 3])))
    track_deadline(id, tk, ARGV[o + 6])
    if ARGV[o + 7] ~= '' then redis.call('HSET', tk, 'trace', ARGV[o + 7]) end
    if ARGV[o + 8] ~= '' then redis.call('HSET', tk, 'limit_key', ARGV[o + 8]) end
    out[#out + 1] = {OK, state}
    created = created + 1
  end
end
if created > 0 then redis.call('HINCRBY', K[6], 'enqueued', created) end
return out
