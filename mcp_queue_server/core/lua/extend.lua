-- extend: the holder moves its lease deadline to now + lease_ms.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, task_id, lease_ms.
-- Returns: {OK, lease_until, cancel_requested (1/0)} or the not_held() answer (NOT_FOUND, NOT_HOLDER, ALREADY).
run_even_when_full()
local id, lease_ms = ARGV[5], tonumber(ARGV[6])
local tk = tkey(id)
local why = not_held(tk)
if why then return why end
local lease_until = now + lease_ms
redis.call('HSET', tk, 'lease_ms', lease_ms)
renew(id, tk, lease_until)
return {OK, lease_until, redis.call('HEXISTS', tk, 'cancel_reason')}
