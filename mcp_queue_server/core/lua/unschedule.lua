-- unschedule: remove a schedule; the tasks it fired stay.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, schedule_id.
-- Returns: {OK} removed; {NOT_FOUND} no such schedule.
run_even_when_full()
local sid = ARGV[5]
if redis.call('DEL', base .. 'sc:' .. sid) == 0 then return {NOT_FOUND} end
redis.call('ZREM', base .. 'schedules', sid)
redis.call('ZREM', base .. 'schedule_ids', sid)
return {OK}
