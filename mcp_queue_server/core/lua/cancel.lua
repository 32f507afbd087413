-- cancel: cancel tasks. A queued or delayed task is cancelled at once (its entry leaves the
-- stream or the delayed set). A working task is flagged (cancel_reason): its holder learns it
-- from extend and checkpoint; it ends cancelled when the holder fails or releases it or its
-- lease expires, and an ack still completes it (see cancel_now in _lib.lua). A waiting_children
-- parent is cancelled at once, then its unfinished children the same way (recursively); its
-- continuation is never enqueued (child_finished only finishes a waiting parent). A saga cancels its
-- running step and compensates once it has ended (cancel_saga). Repeating a cancel changes nothing.
-- Cancelled tasks are announced on the events stream.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, result_ttl_s, reason, n, then n task ids.
-- Returns: n x {code, state, changed}: OK (1) with state cancelled or cancel_requested (a saga:
--          also compensating) and
--          changed 1, or 0 when an earlier cancel did it; NOT_FOUND (-1); ALREADY (3) completed;
--          BAD_STATE (-3) with the state (failed).
run_even_when_full()
local ttl, reason, n = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local cancel

-- A saga: cancel its running step (or the unfinished branches of a parallel one); once that step
-- has ended, the saga compensates what completed (see _saga.lua) and ends cancelled.
local function cancel_saga(id, tk, state)
  if state == 'completed' then return {ALREADY, state} end
  if state == 'failed' or state == 'compensated' then return {BAD_STATE, state} end
  local sk = base .. 'sg:' .. id
  if state ~= 'working' or redis.call('HEXISTS', sk, 'cancel') == 1 then return {OK, state, 0} end
  redis.call('HSET', sk, 'cancel', 1)
  redis.call('HSET', tk, 'error', reason)
  local step = redis.call('HGET', sk, 'wait')
  if step then
    if redis.call('HGET', tkey(step), 'state') == 'waiting_children' then
      for _, child in ipairs(redis.call('SMEMBERS', base .. 'fp:' .. step)) do cancel(child) end
    else
      cancel(step)
    end
  end
  state = redis.call('HGET', tk, 'state')
  return {OK, state == 'working' and 'cancel_requested' or state, 1}
end

cancel = function(id)
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, 'state', 'cancel_reason', 'kind', 'saga')
  local state = f[1]
  if not state then return {NOT_FOUND} end
  if f[3] == 'saga' then return cancel_saga(id, tk, state) end
  if f[4] and state == 'waiting_children' then
    -- A saga's parallel step: its branches are cancelled and the step ends once they all have.
    for _, child in ipairs(redis.call('SMEMBERS', base .. 'fp:' .. id)) do cancel(child) end
    return {OK, 'cancel_requested', 1}
  end
  if state == 'completed' then return {ALREADY, state} end
  if state == 'failed' then return {BAD_STATE, state} end
  if state == 'cancelled' then return {OK, state, 0} end
  if f[2] then return {OK, 'cancel_requested', 0} end
  redis.call('HSET', tk, 'cancel_reason', reason, 'cancel_ttl', ttl)
  if state == 'working' then return {OK, 'cancel_requested', 1} end
  cancel_now(id, tk)
  if state == 'waiting_children' then
    -- The parent is cancelled first, so a child ending now or later no longer finishes it.
    redis.call('ZREM', base .. 'waiting', id)
    for _, child in ipairs(redis.call('SMEMBERS', base .. 'fp:' .. id)) do cancel(child) end
    expire_fanout(id, tk, base .. 'fo:' .. id)
  end
  return {OK, 'cancelled', 1}
end

local out = {}
for i = 1, n do out[i] = cancel(ARGV[7 + i]) end
publish_finished()
return out
