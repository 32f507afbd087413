-- replay: put dead-lettered tasks back in their stream with a fresh attempt budget.
-- All ids are checked before anything changes: one id that is not dead refuses all.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, request_id, n, then n task ids; n = 0 replays the
--       oldest `limit` (ARGV[7]) dead tasks. A re-sent request gets the first run's answer.
-- Returns: {OK, replayed_ids, picked_count} or {NOT_FOUND, id} / {BAD_STATE, id, state}.
ensure_groups()
local req = ARGV[5]
local again = recall('replay', req)
if again then return again end
local picks, refused = dlq_picks()
if refused then return refused end
local ids = {}
for _, p in ipairs(picks) do
  redis.call('XDEL', K[5], p[2])
  if p[3] then
    local tk = tkey(p[1])
    redis.call('HDEL', tk, 'dlq_entry', 'dead_at')
    redis.call('HSET', tk, 'attempt', 0)
    redis.call('HINCRBY', tk, 'replays', 1)
    push(p[1], tk)
    -- Unfinished again: its deadline (kept from the enqueue) is watched again.
    local at = redis.call('HGET', tk, 'deadline_at')
    if at then redis.call('ZADD', base .. 'deadlines', at, p[1]) end
    redis.call('HINCRBY', K[6], 'replayed', 1)
    ids[#ids + 1] = p[1]
  end
end
return remember('replay', req, {OK, ids, #picks})
