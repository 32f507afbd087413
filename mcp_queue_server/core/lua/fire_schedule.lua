-- fire_schedule: fire one due slot of a schedule and advance it, exactly once however many
-- processes try (a compare-and-set on the schedule's version and next_run_at = `expected`).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, threshold, default_max_attempts, schedule_id, version,
--       expected, slot (the latest slot at or before the caller's clock, >= expected), next_slot
--       (the first after it; "" none: the schedule ends), task_id, payload_json (with its
--       "schedule" key), missed (slots in [expected, slot)), grace_ms.
-- Returns: {OK, task_id or "" (nothing fired), skipped slots}; {CONFLICT, next_run_at} another
--          firer or a replace got there first; {NOT_FOUND} removed; {BAD_STATE, next_run_at}
--          not due yet by the store's clock.
-- The caller computes the slots from its cadence (cron or every_ms); due and late follow the
-- store's clock: due when now >= slot, on time when now < next_slot and now - slot <= grace_ms.
-- On time (or late with catch_up "once") it fires one task, which also stands for the `missed`
-- slots before it; late with catch_up "skip" it fires nothing. Either way next_run_at moves to
-- next_slot. The task id is derived from the schedule id and the slot, so a slot fired again
-- (after a remove and re-add) is a duplicate, not a second task.
local threshold, default_max = tonumber(ARGV[5]), ARGV[6]
local sid, version, expected, slot, nxt = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]
local id, payload, missed, grace = ARGV[12], ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15])
local sk = base .. 'sc:' .. sid
local f = redis.call('HMGET', sk, 'version', 'next_run_at', 'type', 'priority', 'max_attempts', 'deadline_ms',
  'catch_up', 'limit_key')
if not f[1] then return {NOT_FOUND} end
if f[1] ~= version or f[2] ~= expected then return {CONFLICT, f[2] or ''} end
if now < slot then return {BAD_STATE, f[2]} end
local on_time = now - slot <= grace and (nxt == '' or now < tonumber(nxt))
local fired, skipped = '', missed
if on_time or f[7] == 'once' then
  local tk = tkey(id)
  if redis.call('EXISTS', tk) == 0 then
    ensure_groups()
    local priority = tonumber(f[4])
    redis.call('HSET', tk, unpack(payload_fields({'type', f[3], 'priority', priority,
      'stream', priority >= threshold and 'high' or 'low', 'attempt', 0, 'max_attempts', f[5] or default_max,
      'created_at', now, 'schedule', sid}, payload)))
    if f[8] then redis.call('HSET', tk, 'limit_key', f[8]) end -- read.lua enforces it
    push(id, tk)
    track_deadline(id, tk, f[6] or '')
    redis.call('HINCRBY', K[6], 'enqueued', 1)
    redis.call('HINCRBY', sk, 'fired', 1)
    redis.call('HSET', sk, 'last_run_at', slot, 'last_task_id', id)
    fired = id
  end
else
  skipped = missed + 1
end
if skipped > 0 then redis.call('HINCRBY', sk, 'missed', skipped) end
redis.call('HSET', sk, 'next_run_at', nxt)
if nxt == '' then
  redis.call('ZREM', base .. 'schedules', sid)
else
  redis.call('ZADD', base .. 'schedules', nxt, sid)
end
return {OK, fired, skipped}
