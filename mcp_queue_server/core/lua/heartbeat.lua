-- heartbeat: mark the caller a live holder of the queue (a worker or server that uses it,
-- busy or idle), and drop holders not seen for holder_stale_ms.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, holder_stale_ms.
-- Returns: now (the queue's clock, ms).
run_even_when_full()
redis.call('ZADD', base .. 'holders', now, consumer)
redis.call('ZREMRANGEBYSCORE', base .. 'holders', '-inf', now - tonumber(ARGV[5]))
return now
