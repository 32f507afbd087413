-- recover: requeue stuck tasks, dead-letter those that used their last attempt (announced on
-- the events stream).
-- Stuck means the lease expired, or (when min_idle_ms is given) the task was
-- delivered or renewed more than min_idle_ms ago, whatever its lease says. The
-- recorded reason says which: a task whose lease still ran was taken back for its idle
-- time, not because its lease expired.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, min_idle_ms ("" = by lease), limit, request_id.
-- A stuck task whose cancellation was requested ends cancelled (see cancel_now in _lib.lua).
-- Returns: {requeued_ids, dead_lettered_ids, cancelled_ids}.
run_even_when_full()
local min_idle, limit, req = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local again = recall('recover', req)
if again then return again end
local ids, idle = {}, {}
if min_idle == '' then
  ids = redis.call('ZRANGEBYSCORE', K[4], '-inf', now, 'LIMIT', 0, limit)
else
  -- Per consumer, so that tasks held back for a limit (the HELD consumer's, never leased, idle
  -- as long as they wait) neither are taken nor fill the page before the stuck ones.
  for i = 1, 2 do
    if redis.call('EXISTS', K[i]) == 1 then
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', K[i], group)) do
        local left = limit - #ids
        if c[2] ~= HELD and left > 0 then
          for _, p in ipairs(redis.call('XPENDING', K[i], group, 'IDLE', tonumber(min_idle), '-', '+', left, c[2])) do
            local e = redis.call('XRANGE', K[i], p[1], p[1])
            if e[1] then
              ids[#ids + 1] = e[1][2][2]
              idle[e[1][2][2]] = p[3]
            end
          end
        end
      end
    end
  end
end
local requeued, dead, cancelled = {}, {}, {}
for _, id in ipairs(ids) do
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, 'state', 'attempt', 'max_attempts', 'lease_until', 'cancel_reason')
  if f[1] ~= 'working' then
    redis.call('ZREM', K[4], id)
  elseif f[5] then
    cancel_now(id, tk)
    cancelled[#cancelled + 1] = id
  elseif tonumber(f[2]) >= tonumber(f[3]) then
    local why = 'lease expired'
    local until_ = tonumber(f[4])
    if idle[id] and until_ and until_ > now then
      why = string.format('idle for %.1f s while its lease ran to %d (%.1f s left); taken back by recover ' ..
        'with min_idle_ms %s', idle[id] / 1000, until_, (until_ - now) / 1000, min_idle)
    end
    dead_letter(id, tk, 'stuck on attempt ' .. f[2] .. ' of ' .. f[3] .. ' (' .. why .. ')')
    dead[#dead + 1] = id
  else
    requeue(id, tk)
    requeued[#requeued + 1] = id
  end
end
publish_finished()
return remember('recover', req, {requeued, dead, cancelled})
