-- purge: delete dead-lettered tasks for good (record, checkpoint, DLQ entry).
-- All ids are checked first: one id that is not dead refuses all.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, now, n, then n task ids; n = 0 purges the oldest
--       `limit` (ARGV[6]) dead tasks.
-- Returns: {OK, purged_count, picked_count} or {NOT_FOUND, id} / {BAD_STATE, id, state}.
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
return {OK, purged, #picks}
