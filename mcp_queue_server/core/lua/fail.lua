-- fail: the holder gives a task up with an error; retry with backoff or dead-letter (announced
-- on the events stream, see _lib.lua).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, task_id, error, retry (1/0), backoff_base_ms, backoff_max_ms,
--       request_id (a re-sent request gets the first run's answer).
-- A task whose cancellation was requested ends cancelled instead (see cancel_now in _lib.lua).
-- Returns: {OK, state, attempt, run_at, fanout|false} with state queued, delayed, failed
--          (dead-lettered) or cancelled; or the not_held() answer (NOT_FOUND, NOT_HOLDER, ALREADY).
run_even_when_full()
local id, err, retry = ARGV[5], ARGV[6], ARGV[7] == '1'
local backoff_base, backoff_max = tonumber(ARGV[8]), tonumber(ARGV[9])
local req = ARGV[10]
local tk = tkey(id)
local again = recall('fail', req)
if again and again[1] == id then return again[2] end
local why = not_held(tk)
if why then return why end
local f = redis.call('HMGET', tk, 'attempt', 'max_attempts', 'cancel_reason')
local attempt, max = tonumber(f[1]), tonumber(f[2])
if f[3] then
  local fan = cancel_now(id, tk)
  publish_finished()
  return remember('fail', req, {id, {OK, 'cancelled', attempt, 0, fan}})[2]
end
if not retry or attempt >= max then
  local reason = err
  if retry then reason = err .. ' (attempt ' .. attempt .. ' of ' .. max .. ')' end
  local fan = dead_letter(id, tk, reason)
  publish_finished()
  return remember('fail', req, {id, {OK, 'failed', attempt, 0, fan}})[2]
end
redis.call('HSET', tk, 'error', err)
redis.call('HINCRBY', K[6], 'retried', 1)
local delay = math.floor(math.min(backoff_base * 2 ^ (attempt - 1), backoff_max))
if delay <= 0 then
  requeue(id, tk)
  return remember('fail', req, {id, {OK, 'queued', attempt, now, false}})[2]
end
unlink(id, tk)
redis.call('HSET', tk, 'state', 'delayed', 'run_at', now + delay)
redis.call('ZADD', K[3], now + delay, id)
return remember('fail', req, {id, {OK, 'delayed', attempt, now + delay, false}})[2]
