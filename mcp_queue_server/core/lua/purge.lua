-- purge: delete dead-lettered tasks for good (record, checkpoint, DLQ entry).
-- All ids are checked first: one id that is not dead refuses all.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, request_id, n, then n task ids; n = 0 purges the
--       oldest `limit` (ARGV[7]) dead tasks. A re-sent request gets the first run's answer.
-- Returns: {OK, purged_count, picked_count} or {NOT_FOUND, id} / {BAD_STATE, id, state}.
run_even_when_full()
local req = ARGV[5]
local again = recall('purge', req)
if again then return again end
local picks, refused = dlq_picks()
if refused then return refused end
local purged = 0
for _, p in ipairs(picks) do
  redis.call('XDEL', K[5], p[2])
  if p[3] then
    redis.call('DEL', tkey(p[1]), ckey(p[1]))
    purged = purged + 1
  end
end
return remember('purge', req, {OK, purged, #picks})
