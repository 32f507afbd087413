-- release: hand every task the caller holds back to the queue at once (graceful
-- shutdown). The delivery is not charged: the attempt counter goes back by one. A task whose
-- cancellation was requested ends cancelled instead (announced, see cancel_now in _lib.lua).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, limit, forget_consumer (1/0), then optional task ids:
--       with ids, only those (when held by the caller) are released.
--       Leaving (forget_consumer) also drops the caller from the live holders.
-- Returns: {released_count, more (1 when another call is needed)}.
run_even_when_full()
local limit, forget = tonumber(ARGV[5]), ARGV[6] == '1'
local released, more = 0, 0
local function give_back(id, tk)
  if redis.call('HEXISTS', tk, 'cancel_reason') == 1 then
    cancel_now(id, tk)
  else
    redis.call('HINCRBY', tk, 'attempt', -1)
    requeue(id, tk)
  end
  released = released + 1
end
if #ARGV > 6 then
  for i = 7, #ARGV do
    local tk = tkey(ARGV[i])
    if redis.call('HGET', tk, 'state') == 'working' and redis.call('HGET', tk, 'consumer') == consumer then
      give_back(ARGV[i], tk)
    end
  end
  publish_finished()
  return {released, 0}
end
for i = 1, 2 do
  if redis.call('EXISTS', K[i]) == 1 then
    local pel = redis.call('XPENDING', K[i], group, '-', '+', limit, consumer)
    if #pel == limit then more = 1 end
    for _, p in ipairs(pel) do
      local e = redis.call('XRANGE', K[i], p[1], p[1])
      local id = e[1] and e[1][2][2]
      local tk = id and tkey(id)
      if tk and redis.call('HGET', tk, 'entry') == p[1] and redis.call('HGET', tk, 'consumer') == consumer then
        give_back(id, tk)
      else
        redis.call('XACK', K[i], group, p[1])
        redis.call('XDEL', K[i], p[1])
      end
    end
  end
end
if forget and more == 0 then
  redis.call('ZREM', base .. 'holders', consumer)
  for i = 1, 2 do
    if redis.call('EXISTS', K[i]) == 1 then
      redis.call('XGROUP', 'DELCONSUMER', K[i], group, consumer)
    end
  end
end
publish_finished()
return {released, more}
