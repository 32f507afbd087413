-- ack: complete tasks held by the caller, store their results, finish fanout parents, move sagas on
-- (see _saga.lua); announce the completed tasks on the events stream (one XADD, see _lib.lua); a
-- keyed task's slot frees (see free_slot).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, result_ttl_s, n, then n x (task_id, result_json).
-- Returns: n x (OK or {code, state_or_holder, lease_until, fanout|false}): a bare OK (1) for a
--   task completed now (most of them: no table built per task), {OK, 'completed', '', fanout}
--   for a fanout child, fanout = {parent, completed, failed, total, done, finished_now};
--   ALREADY (3) completed before (idempotent; stored result kept); NOT_FOUND (-1);
--   NOT_HOLDER (-2) with the state, holder and lease deadline.
run_even_when_full()
local ttl, n = ARGV[5], tonumber(ARGV[6])
local now_text = tostring(now) -- sent per task: as text made once, not formatted by every call
local out = {}
-- Stream entries and leases of completed tasks, removed in one command each at the end.
local entries = {high = {}, low = {}}
local done = {}
local deadlined = {} -- completed tasks that had a deadline: out of <base>deadlines at the end
-- Fields kept on the completed record only when the task had them (positions in f below).
local OPTIONAL, OPTIONAL_NAMES = {6, 13, 14, 15, 16, 17}, {'parent', 'replays', 'error', 'deadline_at', 'limit_key',
  'saga'}
for i = 0, n - 1 do
  local id, result = ARGV[7 + i * 2], ARGV[8 + i * 2]
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, 'state', 'consumer', 'lease_until', 'stream', 'entry', 'parent', 'ck',
    'type', 'priority', 'attempt', 'max_attempts', 'created_at', 'replays', 'error', 'deadline_at', 'limit_key', 'saga')
  local why = refusal(f[1], f[2], f[3])
  if why then
    out[#out + 1] = why
  else
    local stream_entries = entries[f[4]]
    stream_entries[#stream_entries + 1] = f[5]
    done[#done + 1] = id
    if f[15] then deadlined[#deadlined + 1] = id end
    announce(id, 'completed')
    -- Rewritten rather than trimmed: a hash keeps the space its payload took, and a
    -- completed record lives for result_ttl_s.
    local record = {'state', 'completed', 'result', result, 'finished_at', now_text, 'type', f[8],
      'priority', f[9], 'attempt', f[10], 'max_attempts', f[11], 'created_at', f[12]}
    for i = 1, #OPTIONAL do
      local v = f[OPTIONAL[i]]
      if v then record[#record + 1] = OPTIONAL_NAMES[i]; record[#record + 1] = v end
    end
    redis.call('DEL', tk)
    redis.call('HSET', tk, unpack(record))
    redis.call('EXPIRE', tk, ttl)
    if f[7] then redis.call('DEL', ckey(id)) end
    if f[16] then free_slot(id, f[16]) end
    local fan = false
    if f[6] then fan = child_finished(f[6], id, result, true) end
    if f[17] then saga_ended(f[17], id, 'completed', result) end
    out[#out + 1] = fan and {OK, 'completed', '', fan} or OK
  end
end
-- Acked entries leave their stream. XDEL seeks each entry from the start of its listpack node
-- (~2 us an entry, issue 17); XTRIM MINID drops the oldest entries in one pass. An entry below
-- both the oldest pending entry and the last acked here (+1) was delivered (reads go in order)
-- and is not pending: acked, so deleted already unless acked in this call, and never delivered
-- again either way. So the trim removes only entries acked here; when it removed fewer than all
-- of them (another consumer holds older entries, or the ids came out of order), XDEL the rest.
local function drop_entries(s, list)
  local ms, seq = string.match(list[#list], '^(%d+)-(%d+)$')
  -- pcall: a stream deleted by hand has no group to ask (XDEL alone does not fail there).
  local pel = ms and #seq < 13 and redis.pcall('XPENDING', s, group, '-', '+', 1)
  local trimmed = 0
  if pel and not pel.err then
    ms, seq = tonumber(ms), tonumber(seq) + 1 -- both exact in a double (ms below 2^53)
    local bound = string.format('%.0f-%.0f', ms, seq)
    local oldest = pel[1] and pel[1][1]
    if oldest then
      local pms, pseq = string.match(oldest, '^(%d+)-(%d+)$')
      pms, pseq = tonumber(pms), tonumber(pseq)
      if pms < ms or (pms == ms and pseq < seq) then bound = oldest end
    end
    trimmed = redis.call('XTRIM', s, 'MINID', bound)
  end
  if trimmed < #list then redis.call('XDEL', s, unpack(list)) end
end
for which, list in pairs(entries) do
  if #list > 0 then
    local s = stream_key(which)
    redis.call('XACK', s, group, unpack(list))
    drop_entries(s, list)
  end
end
if #done > 0 then
  redis.call('ZREM', K[4], unpack(done))
  redis.call('HINCRBY', K[6], 'completed', #done)
end
if #deadlined > 0 then redis.call('ZREM', base .. 'deadlines', unpack(deadlined)) end
publish_finished()
return out
