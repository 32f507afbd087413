-- Saga transitions, prepended to every script after _lib.lua (not a script itself).
--
-- A saga runs its steps one after another as ordinary tasks. Every transition (a step ended ->
-- the next step enqueued, or the compensation chain started; a compensation ended -> the next
-- one) happens here, inside the script that ended the task (ack, fail, read or recover on a dead
-- lease, cancel, release), so a crash between two calls can neither skip nor repeat a step.
--
-- Keys: <base>t:<saga> the saga's own record (kind saga; state = the saga's status: working,
-- compensating, completed, compensated, failed, cancelled) and <base>sg:<saga>, a hash:
--   n steps; stream, max (attempts) and ttl of its tasks; data (saga_data JSON); oc_type and
--   oc_payload (on_complete); cur (the step running, 0 before the first); wait (the task id the saga
--   waits on: the only task whose end moves it on); cancel (1: cancel requested); clist (JSON list
--   of the units to compensate, in order) and cpos (how many started);
--   per step i: t<i>, p<i> (type, payload JSON), ct<i>, cp<i> (its compensation, optional), l<i>,
--   cl<i> (the limit_key of its task and of its compensation, optional; oc_l: on_complete's), d<i>
--   (its task's deadline_ms from the step's start, optional), trace (start_saga's caller's trace
--   context, optional: every task of the saga carries it),
--   nb<i> (0: one task; else branches i.1 .. i.nb with the same four fields);
--   per unit u (i or i.j): st<u> (working completed failed cancelled compensating compensated
--   compensation_failed), r<u> (result JSON), e<u> (error).
-- Task ids: <saga>.s<i> (a step; a parallel step is a fanout parent waiting on <saga>.s<i>.b<j>),
-- <saga>.c<u> (a compensation), <saga>.done (on_complete). Tasks the saga waits on carry the
-- field saga = <saga>; saga_ended() below is the one entry point the other helpers call.

local function sagakey(saga) return base .. 'sg:' .. saga end

-- The worker's payload: the producer's object with "saga" first (start_saga refuses a "saga" key).
local function with_saga(payload, obj)
  if payload == '{}' then return '{"saga":' .. obj .. '}' end
  return '{"saga":' .. obj .. ',' .. string.sub(payload, 2)
end

-- The results of steps 1..upto as a JSON array (a parallel step's is the array of its branches').
local function saga_results(sk, upto)
  if upto < 1 then return '[]' end
  local fields = {}
  for i = 1, upto do fields[i] = 'r' .. i end
  local got = redis.call('HMGET', sk, unpack(fields))
  for i = 1, upto do got[i] = got[i] or 'null' end
  return '[' .. table.concat(got, ',') .. ']'
end

-- Create one task of the saga (false: its id is taken). `saga` is set on tasks the saga waits on.
local function saga_task(sk, saga, id, type_, payload, parent, limit_key, deadline_ms)
  local tk = tkey(id)
  if redis.call('EXISTS', tk) == 1 then return false end
  local f = redis.call('HMGET', sk, 'stream', 'max', 'trace')
  redis.call('HSET', tk, unpack(payload_fields({'type', type_, 'priority', 0, 'stream', f[1], 'attempt', 0,
    'max_attempts', f[2], 'created_at', now}, payload)))
  if f[3] then redis.call('HSET', tk, 'trace', f[3]) end -- start_saga's caller's trace, continued
  if saga then redis.call('HSET', tk, 'saga', saga) end
  if limit_key then redis.call('HSET', tk, 'limit_key', limit_key) end -- read.lua enforces it
  if deadline_ms then track_deadline(id, tk, deadline_ms) end
  if parent then
    redis.call('HSET', tk, 'parent', parent)
    redis.call('SADD', base .. 'fp:' .. parent, id)
  end
  push(id, tk)
  redis.call('HINCRBY', K[6], 'enqueued', 1)
  return true
end

-- The saga ends with `status`. A failed saga keeps `wait` (its dead compensation): replaying that
-- task from the DLQ and completing it resumes the compensation chain.
local function saga_finish(sk, saga, status)
  local tk = tkey(saga)
  redis.call('HSET', tk, 'state', status, 'finished_at', now)
  announce(saga, status)
  if status ~= 'failed' then redis.call('HDEL', sk, 'wait') end
  if status == 'completed' then
    local f = redis.call('HMGET', sk, 'oc_type', 'oc_payload', 'n', 'data', 'oc_l')
    if f[1] then
      local obj = '{"saga_id":' .. cjson.encode(saga) .. ',"results":' .. saga_results(sk, tonumber(f[3])) ..
        ',"saga_data":' .. (f[4] or 'null') .. '}'
      saga_task(sk, false, saga .. '.done', f[1], with_saga(f[2], obj), false, f[5])
    end
  end
  local ttl = redis.call('HGET', sk, 'ttl')
  redis.call('EXPIRE', tk, ttl)
  redis.call('EXPIRE', sk, ttl)
end

-- A compensation could not run or was dead-lettered or cancelled: the saga fails and says which.
local function saga_comp_failed(sk, saga, u, why)
  local id = saga .. '.c' .. u
  redis.call('HSET', sk, 'st' .. u, 'compensation_failed', 'e' .. u, why)
  redis.call('HSET', tkey(saga), 'error', 'compensation ' .. id .. ' ' .. why .. ' (the DLQ holds it: replay it to ' ..
    'resume compensating)')
  saga_finish(sk, saga, 'failed')
end

-- Start the next compensation of the chain, or end the saga when none is left.
local function saga_compensate_next(sk, saga)
  local f = redis.call('HMGET', sk, 'clist', 'cpos', 'cancel', 'data')
  local list = cjson.decode(f[1])
  local pos = tonumber(f[2]) + 1
  if pos > #list then
    return saga_finish(sk, saga, f[3] and 'cancelled' or 'compensated')
  end
  local u = list[pos]
  local id = saga .. '.c' .. u
  redis.call('HSET', sk, 'cpos', pos, 'wait', id, 'st' .. u, 'compensating')
  local step, branch = string.match(u, '^(%d+)%.?(%d*)$')
  local c = redis.call('HMGET', sk, 'ct' .. u, 'cp' .. u, 'r' .. u, 'cl' .. u)
  local obj = '{"saga_id":' .. cjson.encode(saga) .. ',"step":' .. step ..
    (branch ~= '' and (',"branch":' .. branch) or '') .. ',"compensate":true,"result":' .. (c[3] or 'null') ..
    ',"saga_data":' .. (f[4] or 'null') .. '}'
  if not saga_task(sk, saga, id, c[1], with_saga(c[2], obj), false, c[4]) then
    saga_comp_failed(sk, saga, u, 'could not start: its task id is taken')
  end
end

-- Compensate every completed step (and completed branch) from step `from` down to 1, in reverse
-- order, one after another. Steps without a compensate task are skipped.
local function saga_compensate(sk, saga, from)
  local units = {}
  for i = from, 1, -1 do
    local f = redis.call('HMGET', sk, 'nb' .. i, 'st' .. i, 'ct' .. i)
    local nb = tonumber(f[1])
    if nb > 0 then
      for j = nb, 1, -1 do
        local u = i .. '.' .. j
        local b = redis.call('HMGET', sk, 'st' .. u, 'ct' .. u)
        if b[1] == 'completed' and b[2] then units[#units + 1] = u end
      end
    elseif f[2] == 'completed' and f[3] then
      units[#units + 1] = tostring(i)
    end
  end
  redis.call('HSET', sk, 'clist', cjson.encode(units), 'cpos', 0)
  redis.call('HDEL', sk, 'wait')
  redis.call('HSET', tkey(saga), 'state', 'compensating')
  saga_compensate_next(sk, saga)
end

-- Step i did not complete (`status` failed or cancelled, `why` the error): compensate.
local function saga_step_failed(sk, saga, i, status, why)
  redis.call('HSET', sk, 'st' .. i, status, 'e' .. i, why)
  local tk = tkey(saga)
  if redis.call('HEXISTS', sk, 'cancel') == 0 then
    redis.call('HSET', tk, 'error', 'step ' .. i .. ' (' .. saga .. '.s' .. i .. ') ' .. why)
  end
  saga_compensate(sk, saga, i)
end

-- Enqueue step i: one task, or a fanout parent whose branches all run ('continue': the parent
-- finishes once every branch has, so no branch is still running when compensation starts).
local function saga_start_step(sk, saga, i)
  local f = redis.call('HMGET', sk, 't' .. i, 'p' .. i, 'nb' .. i, 'data', 'ttl', 'max', 'l' .. i, 'd' .. i)
  local id = saga .. '.s' .. i
  local nb = tonumber(f[3])
  redis.call('HSET', sk, 'cur', i, 'wait', id, 'st' .. i, 'working')
  local head = '{"saga_id":' .. cjson.encode(saga) .. ',"step":' .. i
  local tail = ',"results":' .. saga_results(sk, i - 1) .. ',"saga_data":' .. (f[4] or 'null') .. '}'
  if nb == 0 then
    if not saga_task(sk, saga, id, f[1], with_saga(f[2], head .. tail), false, f[7], f[8]) then
      saga_step_failed(sk, saga, i, 'failed', 'could not start: task id ' .. id .. ' is taken')
    end
    return
  end
  local ids = {id}
  for j = 1, nb do ids[j + 1] = id .. '.b' .. j end
  for _, taken in ipairs(ids) do
    if redis.call('EXISTS', tkey(taken)) == 1 then
      return saga_step_failed(sk, saga, i, 'failed', 'could not start: task id ' .. taken .. ' is taken')
    end
  end
  local pk = tkey(id)
  redis.call('HSET', pk, 'type', 'saga.parallel', 'attempt', 0, 'max_attempts', f[6], 'created_at', now,
    'state', 'waiting_children', 'saga', saga)
  redis.call('ZADD', base .. 'waiting', now, id)
  table.remove(ids, 1)
  redis.call('HSET', base .. 'fo:' .. id, 'total', nb, 'completed', 0, 'failed', 0, 'done', 0, 'policy', 'continue',
    'children', cjson.encode(ids), 'ttl', f[5])
  for j = 1, nb do
    local u = i .. '.' .. j
    local b = redis.call('HMGET', sk, 't' .. u, 'p' .. u, 'l' .. u, 'd' .. u)
    redis.call('HSET', sk, 'st' .. u, 'working')
    saga_task(sk, false, ids[j], b[1], with_saga(b[2], head .. ',"branch":' .. j .. tail), id, b[3], b[4])
  end
end

-- Step `cur` completed: run the next one, or finish (a requested cancel compensates instead).
local function saga_advance(sk, saga)
  local f = redis.call('HMGET', sk, 'cur', 'n', 'cancel')
  local i = tonumber(f[1])
  if f[3] then return saga_compensate(sk, saga, i) end
  if i >= tonumber(f[2]) then return saga_finish(sk, saga, 'completed') end
  saga_start_step(sk, saga, i + 1)
end

-- A task the saga may wait on ended: outcome 'completed' (value: its result JSON; a parallel step's
-- parent: nil, the branches are read here), 'failed' (dead-lettered) or 'cancelled' (value: the
-- error). Only the task the saga waits on moves it, so a second report, a late ack or a replayed
-- step changes nothing. The negative control of the chaos run (key <base>saga-split set) stops a
-- completed step's transition after its bookkeeping; a second call (chaos/sagas.py) finishes it.
saga_ended = function(saga, id, outcome, value)
  local sk = sagakey(saga)
  local f = redis.call('HMGET', sk, 'wait', 'cancel')
  if f[1] ~= id then return end
  local kind, u = string.sub(id, #saga + 2, #saga + 2), string.sub(id, #saga + 3)
  if kind == 'c' then
    if outcome ~= 'completed' then
      return saga_comp_failed(sk, saga, u, outcome == 'cancelled' and 'was cancelled' or 'was dead-lettered')
    end
    redis.call('HSET', sk, 'st' .. u, 'compensated')
    local tk = tkey(saga)
    if redis.call('HGET', tk, 'state') == 'failed' then -- resumed by a replay of the dead compensation
      redis.call('HSET', tk, 'state', 'compensating')
      redis.call('HDEL', tk, 'finished_at')
      redis.call('PERSIST', tk)
      redis.call('PERSIST', sk)
    end
    return saga_compensate_next(sk, saga)
  end
  local i = tonumber(u)
  if outcome ~= 'completed' then
    return saga_step_failed(sk, saga, i, outcome, outcome == 'cancelled' and ('was cancelled: ' .. value) or
      ('was dead-lettered: ' .. value))
  end
  local nb = tonumber(redis.call('HGET', sk, 'nb' .. i))
  if nb > 0 then
    local results, lost = {}, nil
    for j = 1, nb do
      local child = id .. '.b' .. j
      -- As the fanout recorded it when the branch ended (a replayed branch may have completed since).
      local state = redis.call('HGET', base .. 'fo:' .. id, 'lost:' .. child) or 'completed'
      local r = redis.call('HGET', base .. 'fr:' .. id, child) or 'null'
      local bu = i .. '.' .. j
      redis.call('HSET', sk, 'st' .. bu, state, 'r' .. bu, r)
      if state ~= 'completed' then lost = lost or child .. ' ' .. (state == 'cancelled' and 'was cancelled' or
        'was dead-lettered') end
      results[j] = r
    end
    if lost then return saga_step_failed(sk, saga, i, f[2] and 'cancelled' or 'failed', 'branch ' .. lost) end
    value = '[' .. table.concat(results, ',') .. ']'
  end
  redis.call('HSET', sk, 'st' .. i, 'completed', 'r' .. i, value)
  if redis.call('EXISTS', base .. 'saga-split') == 1 then return end
  saga_advance(sk, saga)
end
