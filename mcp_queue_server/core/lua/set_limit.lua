-- set_limit: set or remove the limit of a limit key (see the limits helpers in _lib.lua). A line
-- of held-back tasks of the key may move at once (the next read decides; readers are woken).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, limit_key, max_working ("" none), max_per_minute ("" none);
--       both "" remove the limit.
-- Returns: {OK, existed (1/0: the key had a limit before)}.
run_even_when_full()
local key, mw, mpm = ARGV[5], ARGV[6], ARGV[7]
local limits = base .. 'limits'
local existed = redis.call('HEXISTS', limits, key)
if mw == '' and mpm == '' then
  redis.call('HDEL', limits, key)
else
  redis.call('HSET', limits, key, (mw == '' and '-' or mw) .. ' ' .. (mpm == '' and '-' or mpm))
end
if redis.call('ZCARD', base .. 'lp:' .. key) > 0 then
  redis.call('ZADD', base .. 'lwait', now, key)
  wake_readers()
end
return {OK, existed}
