-- list_tasks: one page of the tasks in one state (read-only), in its index's order (see below).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, state, count, task_type ("" = any), cursor_a, cursor_b
--       ("", "" = from the start): queued: "high"/"low" and an entry id, or "parked" and a place;
--       failed: an entry id
--       and ""; the zsets: a score and a member.
-- Returns: {next_a, next_b, now, task...}; next_a "" on the last page. Each task is
--          {id, type, state, priority, attempt, consumer, created_at, lease_until} (false when absent).
-- Indexes: queued: the high then the low stream, after the group's last-delivered id (not yet
-- read), then the tasks held back by a limit (<base>parked, in line order); delayed: the delayed zset (by run-at); working: the leases zset (by lease deadline);
-- waiting_children: <base>waiting (by when the fanout began); cancelled: <base>cancelled (by
-- when cancelled); failed: the dead-letter stream (oldest first).
-- At most `count` index entries are looked at per page (bounded work); an entry whose record
-- is gone or in another state, or (with a task type) of another type, is skipped, so a page
-- may hold fewer than `count` tasks and still have a next one.
local state, count, want = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local ca, cb = ARGV[8], ARGV[9]
local out = {'', '', now}
local FIELDS = {'type', 'state', 'priority', 'attempt', 'consumer', 'created_at', 'lease_until', 'entry', 'dlq_entry'}

local function take(id, entry)
  local f = redis.call('HMGET', tkey(id), unpack(FIELDS))
  if f[2] ~= state or (want ~= '' and f[1] ~= want) then return end
  if entry and entry ~= (state == 'failed' and f[9] or f[8]) then return end
  out[#out + 1] = {id, f[1] or false, f[2], f[3] or false, f[4] or false, f[5] or false, f[6] or false,
    f[7] or false}
end

local function split_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_after(a, b)
  local am, as = split_id(a)
  local bm, bs = split_id(b)
  return am > bm or (am == bm and as > bs)
end

local function last_delivered(s)
  if redis.call('EXISTS', s) == 0 then return '0-0' end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then return info['last-delivered-id'] end
  end
  return '0-0'
end

-- Up to `left` entries of stream `s` after `start`; returns how many are left, or nil when
-- the page ended inside this stream (the cursor is set).
local function stream_page(name, s, start, left)
  local rows = redis.call('XRANGE', s, '(' .. start, '+', 'COUNT', left + 1)
  local last = start
  for i, e in ipairs(rows) do
    if i > left then
      out[1], out[2] = name, last
      return nil
    end
    take(e[2][2], e[1])
    last = e[1]
  end
  return left - #rows
end

local function zset_page(key)
  local start = 0
  if ca ~= '' then
    local score = redis.call('ZSCORE', key, cb)
    if score and tonumber(score) == tonumber(ca) then
      start = redis.call('ZRANK', key, cb) + 1
    else
      start = redis.call('ZCOUNT', key, '-inf', '(' .. ca)
    end
  end
  local rows = redis.call('ZRANGE', key, start, start + count, 'WITHSCORES')
  local after = tonumber(ca)
  for i = 1, #rows, 2 do
    if i > count * 2 then
      out[1], out[2] = rows[i - 1], rows[i - 2]
      return
    end
    local id, score = rows[i], tonumber(rows[i + 1])
    -- Past the cursor (when its member left the index, ties at its score are compared by id).
    if not after or score > after or (score == after and id > cb) then take(id) end
  end
end

-- Up to `left` held-back tasks after place `after` ("" = from the first).
local function parked_page(after, left)
  local rows = redis.call('ZRANGEBYSCORE', base .. 'parked', after == '' and '-inf' or '(' .. after, '+inf',
    'WITHSCORES', 'LIMIT', 0, left + 1)
  for i = 1, #rows, 2 do
    if i > left * 2 then
      out[1], out[2] = 'parked', rows[i - 1]
      return
    end
    take(rows[i])
  end
end

if state == 'queued' then
  local left = count
  if ca ~= 'parked' then
    for _, s in ipairs({{'high', K[1]}, {'low', K[2]}}) do
      if not (ca == 'low' and s[1] == 'high') then
        local start = last_delivered(s[2])
        if ca == s[1] and id_after(cb, start) then start = cb end
        left = stream_page(s[1], s[2], start, left)
        if not left then break end
      end
    end
  end
  if left and left > 0 then
    parked_page(ca == 'parked' and cb or '', left)
  elseif left == 0 and redis.call('EXISTS', base .. 'parked') == 1 then
    out[1], out[2] = 'parked', ''
  end
elseif state == 'failed' then
  stream_page('dlq', K[5], ca == '' and '0-0' or ca, count)
  if out[1] ~= '' then out[1], out[2] = out[2], '' end
else
  local key = ({delayed = K[3], working = K[4], waiting_children = base .. 'waiting',
    cancelled = base .. 'cancelled'})[state]
  zset_page(key)
end
return out
