-- fanout: make a parent wait on new child tasks, all enqueued in one step.
-- A parent that does not exist is created waiting; a parent the caller holds (state working)
-- leaves its stream and waits. Repeating a fanout returns the children of the first one and
-- changes nothing. A parent whose cancellation was requested cannot fan out. The parent joins
-- the <base>waiting index (list_tasks); a held parent frees its limit slot.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, threshold, default_max_attempts, parent_id,
--       parent_data_json ("" none), policy ("fail" | "continue"), result_ttl_s,
--       cont_id ("" = no continuation), cont_type, cont_priority, cont_payload_json, cont_max, cont_trace,
--       cont_limit_key, n, max_length (0: none), parent_trace, then n x (task_id, type, priority, payload_json,
--       max_attempts or "", deadline_ms or "" (_lib track_deadline), trace or "" (tracing.py), limit_key or "").
-- Returns: {OK, child_ids, cont_id|false} created; {DUPLICATE, child_ids, cont_id|false} repeated;
--          {NOT_HOLDER, state, holder, until} / {BAD_STATE, state} the parent can't fan out
--          (state cancel_requested: its cancellation was requested);
--          {CONFLICT, id} a child id is already in use; {FULL, length} the children would
--          take the queue (waiting + delayed) past max_length: nothing was created.
ensure_groups()
local threshold, default_max = tonumber(ARGV[5]), ARGV[6]
local parent, data, policy = ARGV[7], ARGV[8], ARGV[9]
local ttl, cont_id, n = ARGV[10], ARGV[11], tonumber(ARGV[18])
local fk = base .. 'fo:' .. parent
local function route(priority) return tonumber(priority) >= threshold and 'high' or 'low' end
local function max_or_default(max) return max ~= '' and max or default_max end

if redis.call('EXISTS', fk) == 1 then
  local f = redis.call('HMGET', fk, 'children', 'cont_id')
  return {DUPLICATE, cjson.decode(f[1]), f[2] or false}
end
local pk = tkey(parent)
local pstate = redis.call('HGET', pk, 'state')
if pstate then
  local why = not_held(pk)
  if why then
    if why[1] == NOT_HOLDER and why[2] == 'working' then return why end
    return {BAD_STATE, pstate}
  end
  if redis.call('HEXISTS', pk, 'cancel_reason') == 1 then return {BAD_STATE, 'cancel_requested'} end
end
local ids = {}
for i = 0, n - 1 do
  local id = ARGV[21 + i * 8]
  if id == parent or redis.call('EXISTS', tkey(id)) == 1 then return {CONFLICT, id} end
  ids[#ids + 1] = id
end
if cont_id ~= '' and (cont_id == parent or redis.call('EXISTS', tkey(cont_id)) == 1) then
  return {CONFLICT, cont_id}
end
local max_length = tonumber(ARGV[19])
if max_length > 0 then
  local length = queue_length()
  if length + n > max_length then return {FULL, length} end
end

if pstate then
  unlink(parent, pk)
else
  redis.call('HSET', pk, 'type', 'fanout', 'attempt', 0, 'max_attempts', default_max, 'created_at', now)
  if ARGV[20] ~= '' then redis.call('HSET', pk, 'trace', ARGV[20]) end
end
redis.call('HSET', pk, 'state', 'waiting_children')
redis.call('ZADD', base .. 'waiting', now, parent)
redis.call('HSET', fk, 'total', n, 'completed', 0, 'failed', 0, 'done', 0, 'policy', policy,
  'children', cjson.encode(ids), 'ttl', ttl)
if data ~= '' then redis.call('HSET', fk, 'data', data) end
if cont_id ~= '' then
  redis.call('HSET', fk, 'cont_id', cont_id, 'cont_type', ARGV[12], 'cont_payload', ARGV[14],
    'cont_priority', ARGV[13], 'cont_stream', route(ARGV[13]), 'cont_max', max_or_default(ARGV[15]))
  if ARGV[16] ~= '' then redis.call('HSET', fk, 'cont_trace', ARGV[16]) end
  if ARGV[17] ~= '' then redis.call('HSET', fk, 'cont_limit_key', ARGV[17]) end
end
for i = 0, n - 1 do
  local o = 21 + i * 8
  local tk = tkey(ARGV[o])
  redis.call('HSET', tk, unpack(payload_fields({'type', ARGV[o + 1], 'priority', ARGV[o + 2],
    'stream', route(ARGV[o + 2]), 'attempt', 0, 'max_attempts', max_or_default(ARGV[o + 4]),
    'created_at', now, 'parent', parent}, ARGV[o + 3])))
  if ARGV[o + 6] ~= '' then redis.call('HSET', tk, 'trace', ARGV[o + 6]) end
  if ARGV[o + 7] ~= '' then redis.call('HSET', tk, 'limit_key', ARGV[o + 7]) end
  push(ARGV[o], tk)
  track_deadline(ARGV[o], tk, ARGV[o + 5])
  redis.call('SADD', base .. 'fp:' .. parent, ARGV[o])
end
redis.call('HINCRBY', K[6], 'enqueued', n)
return {OK, ids, cont_id ~= '' and cont_id or false}
