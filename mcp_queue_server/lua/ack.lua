-- ack: complete tasks held by the caller, store their results, finish fanout parents.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, now, result_ttl_s, n, then n x (task_id, result_json).
-- Returns: n x {code, state_or_holder, lease_until, fanout|false}:
--   OK (1) completed now; ALREADY (3) completed before (idempotent; stored result kept);
--   NOT_FOUND (-1); NOT_HOLDER (-2) with the state, holder and lease deadline;
--   fanout = {parent, completed, failed, total, done, finished_now} for a child.
local ttl, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
for i = 0, n - 1 do
  local id, result = ARGV[7 + i * 2], ARGV[8 + i * 2]
  local tk = tkey(id)
  local why = not_held(tk)
  if why then
    out[#out + 1] = why
  else
    unlink(id, tk)
    redis.call('HSET', tk, 'state', 'completed', 'result', result, 'finished_at', now)
    redis.call('HDEL', tk, 'payload')
    redis.call('EXPIRE', tk, ttl)
    redis.call('DEL', ckey(id))
    redis.call('HINCRBY', K[6], 'completed', 1)
    local parent = redis.call('HGET', tk, 'parent')
    local fan = false
    if parent then fan = child_finished(parent, id, result, true) end
    out[#out + 1] = {OK, 'completed', '', fan}
  end
end
return out
