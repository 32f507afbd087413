-- inspect_dlq: one page of the dead-letter stream with each task's record (read-only).
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, count, cursor ("" = from the start), newest_first (1/0).
-- Returns: {next_cursor or "", entry...}; each entry is
--          {dlq_entry_id, task_id, type, payload, error, attempt, max_attempts, priority,
--           source_stream, created_at, dead_at, replays, parent}.
local count, cursor, newest = tonumber(ARGV[5]), ARGV[6], ARGV[7] == '1'
local page
if newest then
  page = redis.call('XREVRANGE', K[5], cursor == '' and '+' or '(' .. cursor, '-', 'COUNT', count + 1)
else
  page = redis.call('XRANGE', K[5], cursor == '' and '-' or '(' .. cursor, '+', 'COUNT', count + 1)
end
local out = {''}
for i, e in ipairs(page) do
  if i > count then out[1] = page[count][1] break end
  local id = e[2][2]
  local f = redis.call('HMGET', tkey(id), 'type', 'payload', 'error', 'attempt', 'max_attempts', 'priority',
    'source_stream', 'created_at', 'dead_at', 'replays', 'parent', 'p2', 'p3', 'p4')
  out[#out + 1] = {e[1], id, f[1] or false, payload_of(id, f[2], f[12], f[13], f[14]) or false, f[3] or false,
    f[4] or false, f[5] or false, f[6] or false, f[7] or false, f[8] or false, f[9] or false, f[10] or false,
    f[11] or false}
end
return out
