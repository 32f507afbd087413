-- schedule: set a schedule of this queue (create it, or replace its definition), or leave an
-- identical one alone. Indexed in <base>schedules (id -> next_run_at: what falls due next) and
-- <base>schedule_ids (id, score 0: listing by id).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, schedule_id, definition (canonical JSON of what the caller
--       set: equal means a repeat), first_slot (ms, from the caller's cadence), then field/value
--       pairs of the definition for the schedule hash <base>sc:<id> (type, payload, priority,
--       catch_up, anchor, and those set of cron, every_ms, start_at, end_at, max_attempts, deadline_ms,
--       limit_key).
-- A replace keeps the history (last run, counts) and bumps `version`, so a firing computed from
-- the old definition (fire_schedule.lua compares the version) changes nothing.
-- Returns: {OK, next_run_at, replaced 1/0} set now; {DUPLICATE, next_run_at or ""} the same
--          definition was set before and nothing changed ("": it has ended).
local sid, definition, first = ARGV[5], ARGV[6], ARGV[7]
local sk = base .. 'sc:' .. sid
local f = redis.call('HMGET', sk, 'definition', 'next_run_at')
if f[1] == definition then return {DUPLICATE, f[2] or ''} end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HDEL', sk, 'cron', 'every_ms', 'start_at', 'end_at', 'max_attempts', 'deadline_ms',
  'limit_key')
redis.call('HSET', sk, 'definition', definition, 'next_run_at', first, 'set_at', now, unpack(fields))
redis.call('HINCRBY', sk, 'version', 1)
redis.call('ZADD', base .. 'schedules', first, sid)
redis.call('ZADD', base .. 'schedule_ids', 0, sid)
return {OK, first, f[1] and 1 or 0}
