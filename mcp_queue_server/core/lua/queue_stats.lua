-- queue_stats: one queue's statistics (read-only): the figures reads.py's stats pipeline reads in
-- three round trips, in one call, so a page of queues costs one round trip (issue 17).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, holder_stale_ms (holders seen longer ago are not listed).
-- Returns: {now, high_length, low_length, high_in_flight, low_in_flight, consumers, delayed,
--           dead_letter, overdue, past_deadline, first_deadline or false, totals, holders,
--           limit_keys, oldest_high or false, oldest_low or false}
--          consumers: {name, pending, idle_ms, ...} of both streams' group (the held consumer
--          left out; a name may come twice); totals: HGETALL of the stats hash; holders:
--          {name, last_seen_ms, ...}; limit_keys: {key, limit or false, working, waiting,
--          started_last_minute, ...} for each key with a limit or a line;
--          oldest_*: the id of the stream's oldest entry not yet delivered to the group.
local held = '(held)' -- keys.HELD_CONSUMER: its pending entries are held-back tasks, waiting

-- pairs of a flat {field, value, ...} reply (XINFO) as a table
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local consumers = {}
-- In flight on a stream: its group's pending entries less the held consumer's; also its
-- consumers, and the oldest entry after the group's last-delivered id.
local function stream(key)
  local pending = redis.pcall('XPENDING', key, group)
  local flying = 0
  if pending.err == nil then
    flying = pending[1]
    for _, c in ipairs(pending[4] or {}) do
      if c[1] == held then flying = flying - tonumber(c[2]) end
    end
  end
  local last = '0-0'
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if groups.err == nil then
    for _, g in ipairs(groups) do
      local f = fields(g)
      if f['name'] == group then last = f['last-delivered-id'] end
    end
    local rows = redis.pcall('XINFO', 'CONSUMERS', key, group)
    if rows.err == nil then
      for _, row in ipairs(rows) do
        local f = fields(row)
        if f['name'] ~= held then
          consumers[#consumers + 1] = f['name']
          consumers[#consumers + 1] = f['pending']
          consumers[#consumers + 1] = f['idle']
        end
      end
    end
  end
  local first = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)[1]
  return flying, first and first[1] or false
end

local high_flying, oldest_high = stream(K[1])
local low_flying, oldest_low = stream(K[2])

local earliest = redis.call('ZRANGE', base .. 'deadlines', 0, 0, 'WITHSCORES')
local holders = redis.call('ZRANGEBYSCORE', base .. 'holders', now - tonumber(ARGV[5]), '+inf', 'WITHSCORES')

-- Limit keys: those with a limit and those with a line of held-back tasks, with their counts.
local limits = fields(redis.call('HGETALL', base .. 'limits'))
for _, key in ipairs(redis.call('ZRANGE', base .. 'lwait', 0, -1)) do
  if limits[key] == nil then limits[key] = false end
end
local limit_keys = {}
for key in pairs(limits) do
  limit_keys[#limit_keys + 1] = key
  limit_keys[#limit_keys + 1] = limits[key]
  limit_keys[#limit_keys + 1] = redis.call('SCARD', base .. 'lw:' .. key)
  limit_keys[#limit_keys + 1] = redis.call('ZCARD', base .. 'lp:' .. key)
  limit_keys[#limit_keys + 1] = redis.call('ZCOUNT', base .. 'lr:' .. key, '(' .. (now - 60000), '+inf')
end

return {now, redis.call('XLEN', K[1]), redis.call('XLEN', K[2]), high_flying, low_flying, consumers,
  redis.call('ZCARD', K[3]), redis.call('XLEN', K[5]), redis.call('ZCOUNT', K[4], '-inf', now),
  redis.call('ZCOUNT', base .. 'deadlines', '-inf', '(' .. now), earliest[2] or false,
  redis.call('HGETALL', K[6]),
  holders, limit_keys, oldest_high, oldest_low}
