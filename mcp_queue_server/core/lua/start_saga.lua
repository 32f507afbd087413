-- start_saga: create a saga and enqueue its first step (see _saga.lua), unless the saga exists.
-- KEYS: the six queue keys (see _lib.lua).
-- ARGV: base, group, consumer, clock, saga_id, result_ttl_s, max_attempts, stream (of its tasks),
--       saga_data_json ("" none), on_complete_type ("" none), on_complete_payload_json,
--       on_complete_limit_key, max_length (0: none), trace (the caller's trace context, "" none;
--       every task of the saga carries it), n, then n steps x (type, payload_json, comp_type
--       ("" none), comp_payload_json, limit_key, comp_limit_key, deadline_ms, nb, then nb branches x
--       (type, payload_json, comp_type, comp_payload_json, limit_key, comp_limit_key, deadline_ms));
--       a parallel step has type "" and nb >= 2. A limit_key or deadline_ms "" is none.
-- Returns: {OK, state} created (state: working, or what its first step's start made of it);
--          {DUPLICATE, state} the saga exists and nothing changed; {CONFLICT, id} the id is a task's;
--          {FULL, length} its first step would take the queue (waiting + delayed) past max_length.
local saga, ttl, max, stream = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local tk, sk = tkey(ARGV[5]), base .. 'sg:' .. ARGV[5]
local f = redis.call('HMGET', tk, 'state', 'kind')
if f[1] then
  if f[2] == 'saga' then return {DUPLICATE, f[1]} end
  return {CONFLICT, saga}
end
local n = tonumber(ARGV[15])
local fields = {'n', n, 'stream', stream, 'max', max, 'ttl', ttl, 'cur', 0}
if ARGV[9] ~= '' then fields[#fields + 1] = 'data'; fields[#fields + 1] = ARGV[9] end
if ARGV[14] ~= '' then fields[#fields + 1] = 'trace'; fields[#fields + 1] = ARGV[14] end
if ARGV[10] ~= '' then
  fields[#fields + 1] = 'oc_type'; fields[#fields + 1] = ARGV[10]
  fields[#fields + 1] = 'oc_payload'; fields[#fields + 1] = ARGV[11]
  if ARGV[12] ~= '' then fields[#fields + 1] = 'oc_l'; fields[#fields + 1] = ARGV[12] end
end
local function add(u, o)
  fields[#fields + 1] = 't' .. u; fields[#fields + 1] = ARGV[o]
  fields[#fields + 1] = 'p' .. u; fields[#fields + 1] = ARGV[o + 1]
  if ARGV[o + 2] ~= '' then
    fields[#fields + 1] = 'ct' .. u; fields[#fields + 1] = ARGV[o + 2]
    fields[#fields + 1] = 'cp' .. u; fields[#fields + 1] = ARGV[o + 3]
  end
  if ARGV[o + 4] ~= '' then fields[#fields + 1] = 'l' .. u; fields[#fields + 1] = ARGV[o + 4] end
  if ARGV[o + 5] ~= '' then fields[#fields + 1] = 'cl' .. u; fields[#fields + 1] = ARGV[o + 5] end
  if ARGV[o + 6] ~= '' then fields[#fields + 1] = 'd' .. u; fields[#fields + 1] = ARGV[o + 6] end
end
local o = 16
local first_tasks = 1
for i = 1, n do
  local nb = tonumber(ARGV[o + 7])
  add(tostring(i), o)
  fields[#fields + 1] = 'nb' .. i; fields[#fields + 1] = nb
  o = o + 8
  if i == 1 and nb > 0 then first_tasks = nb end
  for j = 1, nb do
    add(i .. '.' .. j, o)
    o = o + 7
  end
end
local max_length = tonumber(ARGV[13])
if max_length > 0 then
  local length = queue_length()
  if length + first_tasks > max_length then return {FULL, length} end
end
ensure_groups()
redis.call('HSET', sk, unpack(fields))
redis.call('HSET', tk, 'kind', 'saga', 'type', 'saga', 'state', 'working', 'attempt', 0, 'created_at', now)
saga_start_step(sk, saga, 1)
publish_finished()
return {OK, redis.call('HGET', tk, 'state')}
