-- enqueue: create tasks (one or a batch) unless their id already exists.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, now, threshold, default_max_attempts, n,
--       then n x (task_id, type, priority, payload_json, delay_ms, max_attempts or "").
-- Returns: n x {code, state}: code OK (1) created, DUPLICATE (2) the id exists and
--          nothing changed; state is the task's state after the call.
ensure_groups()
local threshold, default_max, n = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local out = {}
for i = 0, n - 1 do
  local o = 8 + i * 6
  local id, delay = ARGV[o], tonumber(ARGV[o + 4])
  local tk = tkey(id)
  local state = redis.call('HGET', tk, 'state')
  if state then
    out[#out + 1] = {DUPLICATE, state}
  else
    local priority = tonumber(ARGV[o + 2])
    local max = ARGV[o + 5]
    if max == '' then max = default_max end
    redis.call('HSET', tk, 'type', ARGV[o + 1], 'priority', priority, 'payload', ARGV[o + 3],
      'stream', priority >= threshold and 'high' or 'low', 'attempt', 0, 'max_attempts', max,
      'created_at', now)
    if delay > 0 then
      redis.call('HSET', tk, 'state', 'delayed', 'run_at', now + delay)
      redis.call('ZADD', K[3], now + delay, id)
      out[#out + 1] = {OK, 'delayed'}
    else
      push(id, tk)
      out[#out + 1] = {OK, 'queued'}
    end
    redis.call('HINCRBY', K[6], 'enqueued', 1)
  end
end
return out
