-- checkpoint: save (or, with empty data, delete) a task's progress; when the caller
-- holds the lease, renew it. Only the holder may write, or anyone before the first
-- delivery (to seed it); a late write by a former holder is refused (fencing).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, task_id, data_json ("" = delete), ttl_s.
-- Returns: {OK, lease_until or 0 when not held, cancel_requested (1/0)}, or {NOT_FOUND} / {NOT_HOLDER, state, holder, until}
--          / {ALREADY, 'completed'}.
local id, data, ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])
local tk = tkey(id)
local why = not_held(tk)
local lease_until = 0
if why then
  local seeding = (why[2] == 'queued' or why[2] == 'delayed') and redis.call('HGET', tk, 'attempt') == '0'
  if not seeding then return why end
else
  local lease_ms = tonumber(redis.call('HGET', tk, 'lease_ms'))
  lease_until = now + lease_ms
  renew(id, tk, lease_until)
end
if data == '' then
  redis.call('DEL', ckey(id))
  redis.call('HDEL', tk, 'ck')
else
  redis.call('SET', ckey(id), data, 'EX', ttl)
  redis.call('HSET', tk, 'ck', 1)
end
return {OK, lease_until, redis.call('HEXISTS', tk, 'cancel_reason')}
