-- read: deliver up to `count` tasks to the caller, leased until now + lease_ms.
-- First promotes due delayed tasks, then re-delivers tasks whose lease expired (or
-- dead-letters them when they used their last attempt, announced on the events stream),
-- then reads new entries. An expired task whose cancellation was requested ends cancelled.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, count, lease_ms, prefer_high (1/0), promote_limit,
--       request_id (a re-sent request gets the tasks the first run leased),
--       recall_only (1: only a re-sent request's tasks), holder_stale_ms. Sent behind a
--       blocking XREAD, the script reads the clock when it runs, not when it was sent. Every
--       read also marks the caller a live holder (zset <base>holders, score now) and drops
--       holders not seen for holder_stale_ms, client_room (see below).
-- Returns: {next_wake_ms or -1, dead_lettered_count, last_high_id, last_low_id, now, task...};
--          now is the clock the script ran with (next_wake_ms - now is how long until
--          something falls due); the last ids ("" when tasks were delivered) let a blocking
--          reader wait for entries added after this call (XREAD BLOCK). Each task is
--          {id, type, priority, payload, attempt, lease_until, checkpoint|false, parent|false,
--          trace|false} (trace: the context the task was enqueued with, tracing.py).
-- Limits (see _lib.lua): a task whose key is at its limit is held back in its key's line and
-- the read goes on with other tasks (no head-of-line blocking); lines of keys with room are
-- served first, in order. A key limited by its rate falls due at a time that is a wake time.
-- client_room (ARGV[12]): "" (the script counts each key's room), or, in the negative control
-- only, "key room key room ...": the room a client counted before the call, trusted instead.
run_even_when_full()
ensure_groups()
redis.call('ZADD', base .. 'holders', now, consumer)
redis.call('ZREMRANGEBYSCORE', base .. 'holders', '-inf', now - tonumber(ARGV[11]))
local count, lease_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local prefer_high, promote_limit, req = ARGV[7] == '1', tonumber(ARGV[8]), ARGV[9]
local lease_until = now + lease_ms
-- Numbers sent per task go as text made once: Redis formats each number argument with sprintf.
local until_text, lease_text, attempt_texts = tostring(lease_until), tostring(lease_ms), {}
local out = {-1, 0, '', '', now}
local delivered = 0

local ids = {}
local leases = {}
-- Read with one HMGET per task; 'ck' flags a saved checkpoint so most reads skip the GET; 'p2'..'p4'
-- are the payload's pieces (see payload_of in _lib.lua). A new entry's task needs the first twelve
-- (NEW); a re-sent request's and a reclaimed one's all.
local FIELDS = {'type', 'priority', 'payload', 'parent', 'attempt', 'ck', 'entry', 'trace', 'limit_key',
  'p2', 'p3', 'p4', 'lease_until', 'state', 'consumer'}
local NEW = {unpack(FIELDS, 1, 12)}
-- Whether the read touched a limit's line (then it looks again for the next time a line falls due).
local lines_touched = false

-- The negative control: room per key as a client counted it (read, then check).
if ARGV[12] and ARGV[12] ~= '' then
  local words = {}
  for w in string.gmatch(ARGV[12], '%S+') do words[#words + 1] = w end
  -- A key the client said is full is looked at again in 100 ms (no slot of its may free here).
  for i = 1, #words, 2 do limit_cache[words[i]] = {mw = tonumber(words[i + 1]), working = 0, retry = now + 100} end
end

-- A keyed task may start now: nobody of its key waits in line and the key has room.
local in_line = {}
local function may_start(key)
  if in_line[key] == nil then in_line[key] = redis.call('ZCARD', base .. 'lp:' .. key) > 0 end
  return not in_line[key] and limit_room(key)
end

local function hold_back(id, tk, key, stream, entry)
  park(id, tk, key, stream, entry)
  in_line[key] = true
  lines_touched = true
end

local function record(id, f)
  out[#out + 1] = {id, f[1], tonumber(f[2]), payload_of(id, f[3], f[10], f[11], f[12]), tonumber(f[5]),
    tonumber(f[13]), f[6] and redis.call('GET', ckey(id)) or false, f[4] or false, f[8] or false}
end

local function deliver(id, tk, f)
  local attempt = tonumber(f[5]) + 1
  local text = attempt_texts[attempt]
  if not text then
    text = tostring(attempt)
    attempt_texts[attempt] = text
  end
  f[5], f[13] = attempt, lease_until
  redis.call('HSET', tk, 'attempt', text, 'state', 'working', 'consumer', consumer, 'lease_until', until_text,
    'lease_ms', lease_text)
  leases[#leases + 1] = until_text
  leases[#leases + 1] = id
  record(id, f)
  delivered = delivered + 1
  ids[delivered] = id
end

-- 0. A re-sent request: hand back what the first run leased (still held by the caller).
local first_run = recall('read', req)
if first_run then
  for _, id in ipairs(first_run) do
    local f = redis.call('HMGET', tkey(id), unpack(FIELDS))
    if f[14] == 'working' and f[15] == consumer then record(id, f) end
  end
  return out
end
if ARGV[10] == '1' then return out end

-- 1. Due delayed tasks join the tail of their stream.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K[3], '-inf', now, 'LIMIT', 0, promote_limit)) do
  redis.call('ZREM', K[3], id)
  local tk = tkey(id)
  if redis.call('HGET', tk, 'state') == 'delayed' then
    redis.call('HDEL', tk, 'run_at')
    push(id, tk)
  end
end

-- 2. Expired leases: deliver them again (one XCLAIM per stream moves their entries to this
--    consumer) or dead-letter those that used their last attempt. One HMGET per task reads
--    FIELDS plus stream and max_attempts.
local RECLAIM = {unpack(FIELDS)}
RECLAIM[16], RECLAIM[17], RECLAIM[18] = 'stream', 'max_attempts', 'cancel_reason'
local claims = {{'XCLAIM', K[1], group, consumer, 0}, {'XCLAIM', K[2], group, consumer, 0}}
local reclaimed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K[4], '-inf', now, 'LIMIT', 0, count)) do
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, unpack(RECLAIM))
  if f[14] ~= 'working' or not f[7] then
    redis.call('ZREM', K[4], id)
  elseif f[18] then
    cancel_now(id, tk)
  elseif tonumber(f[5]) >= tonumber(f[17]) then
    dead_letter(id, tk, 'lease expired on attempt ' .. f[5] .. ' of ' .. f[17])
    out[2] = out[2] + 1
  elseif f[9] and (drop_slot(id, f[9]) or true) and not may_start(f[9]) then
    -- Its expired delivery's slot is freed; the key has no room (or others wait): into line.
    redis.call('ZREM', K[4], id)
    redis.call('HDEL', tk, 'consumer', 'lease_until')
    hold_back(id, tk, f[9], f[16], f[7])
  else
    if f[9] then take_slot(id, f[9]) end
    local claim = claims[f[16] == 'high' and 1 or 2]
    claim[#claim + 1] = f[7]
    reclaimed[#reclaimed + 1] = {id, tk, f}
  end
end
for _, claim in ipairs(claims) do
  if #claim > 5 then
    claim[#claim + 1] = 'JUSTID'
    redis.call(unpack(claim))
  end
end
for _, r in ipairs(reclaimed) do deliver(r[1], r[2], r[3]) end

-- 3. Held-back tasks whose key's line may move, in line order (they waited longer than new entries).
local wait_key = base .. 'lwait'
local first = redis.call('ZRANGE', wait_key, 0, 0, 'WITHSCORES')
if first[2] then lines_touched = true end
if first[2] and tonumber(first[2]) <= now then
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', wait_key, '-inf', now)) do
    if delivered >= count then break end
    local line = base .. 'lp:' .. key
    while delivered < count do
      local id = redis.call('ZRANGE', line, 0, 0)[1]
      if not id then
        redis.call('ZREM', wait_key, key)
        break
      end
      local ok, due = limit_room(key)
      if not ok then
        redis.call('ZADD', wait_key, due, key)
        break
      end
      local tk = tkey(id)
      unpark(id, tk, key)
      local f = redis.call('HMGET', tk, unpack(RECLAIM))
      if f[14] == 'queued' and f[7] then
        redis.call('XCLAIM', stream_key(f[16]), group, consumer, 0, f[7], 'JUSTID')
        take_slot(id, key)
        deliver(id, tk, f)
      end
    end
  end
end

-- 4. New entries, preferred stream first. A keyed task without room is held back and the read
--    goes on (at most promote_limit held back per read: then it says to look again at once).
local order = prefer_high and {K[1], K[2]} or {K[2], K[1]}
local held_now = 0
for _, s in ipairs(order) do
  local which = s == K[1] and 'high' or 'low'
  while delivered < count and held_now < promote_limit do
    local want = count - delivered
    local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', s, '>')
    if not res then break end
    local entries = res[1][2]
    for _, e in ipairs(entries) do
      local id = e[2][2]
      local tk = tkey(id)
      local f = redis.call('HMGET', tk, unpack(NEW))
      if f[7] ~= e[1] then
        -- Orphan entry (its task was purged or re-linked, or a wake-up): drop it.
        redis.call('XACK', s, group, e[1])
        redis.call('XDEL', s, e[1])
      elseif not f[9] then
        deliver(id, tk, f)
      elseif may_start(f[9]) then
        take_slot(id, f[9])
        deliver(id, tk, f)
      else
        hold_back(id, tk, f[9], which, e[1])
        held_now = held_now + 1
      end
    end
    if #entries < want then break end
  end
end

if #leases > 0 then redis.call('ZADD', K[4], unpack(leases)) end

-- When to look again: the earliest due delayed task or expiring lease.
local wake = nil
for _, z in ipairs({K[3], K[4]}) do
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if first[2] then
    local t = tonumber(first[2])
    if not wake or t < wake then wake = t end
  end
end
if lines_touched then
  local due = redis.call('ZRANGE', wait_key, 0, 0, 'WITHSCORES')[2]
  if held_now >= promote_limit then due = now end
  if due and tonumber(due) < BLOCKED and (not wake or tonumber(due) < wake) then wake = tonumber(due) end
end
if wake then out[1] = wake end
publish_finished()
if delivered > 0 then remember('read', req, ids) end
if delivered == 0 then
  for i = 1, 2 do
    local last = redis.call('XREVRANGE', K[i], '+', '-', 'COUNT', 1)
    out[2 + i] = last[1] and last[1][1] or '0-0'
  end
end
return out
