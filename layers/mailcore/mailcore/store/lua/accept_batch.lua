-- Accept a batch of deliveries and malformed-command records in one atomic
-- step, optionally advancing a stream offset with them.
--
-- ARGV[1]  how many stream entries the step covers; "0": none, no offset
--          (the REST intake). Otherwise KEYS[1] is the stream offset,
--          advanced to ARGV[3] if it still equals ARGV[2] (else nothing is
--          written: another poller moved it), and KEYS[2] the stream's trim
--          marks: ARGV[3] is added, scored by the number of entries handled
--          so far, so the poller can find an entry a given number of handled
--          entries back without reading them (services/stream_intake.py).
-- ARGV[2]  expected offset        ARGV[3]  new offset
-- ARGV[4]  number of entries; then, per entry: kind, key count, arg count, args
--
-- kind "accept" (keys: idempotency record, delivery, first attempt, attempt
-- schedule, [malformed record, malformed index when on_conflict is
-- "record"], index sorted sets...; args: fingerprint, delivery id,
-- created_at_ms, idempotency ttl ms, delivery ttl ms ("0": none), first
-- attempt due ms ("": no attempt), outcome, on_conflict, n delivery pairs,
-- pairs..., n attempt pairs, pairs..., [malformed block when "record"])
--
-- on_conflict says what a conflict (the idempotency key taken by a different
-- command, or the delivery id taken) becomes:
--   "report"  the REST intake: answered, nothing written
--   "record"  a stream entry: a malformed record, from the block sent along
--   "ask"     a stream entry sent without its block (the usual case: the
--             redacted raw fields are only needed for a conflict). If any
--             entry in this mode conflicts, the script writes nothing at all
--             and answers {"records_needed", count}; the caller sends the
--             batch again in "record" mode.
--
-- kind "malformed" (keys: malformed record, malformed index; args: the
-- malformed block: index member, ttl ms, score, n pairs, pairs...)
--
-- Returns {"offset_moved", stored_offset}, {"records_needed", count} or
-- {"ok", result per entry}:
--   {"created", delivery_id}
--   {"duplicate", existing_delivery_id, outcome, same_fingerprint 1|0}
--   {"id_taken", delivery_id}                    (report mode)
--   {"malformed", failure_code}                 ("" for kind "malformed": the caller knows it)
--
-- Two passes. The first decides what becomes of every entry, reading the
-- store and what the entries before it in this batch will write, and writes
-- nothing; the second writes. Redis does not roll back a script that fails
-- half way, so every check is made before the first write. Index entries
-- (all scored by creation time, the schedule by due time) are added at the
-- end with one ZADD per index key.

local key_at = 1
local covered = tonumber(ARGV[1])
if covered > 0 then
  local stored = redis.call('GET', KEYS[1]) or '0-0'
  if stored ~= ARGV[2] then
    return {'offset_moved', stored}
  end
  key_at = 3
end

local CONFLICT_MESSAGES = {
  idempotency_conflict = 'idempotency_key was already used for a different command',
  delivery_id_conflict = 'delivery_id already belongs to another delivery',
}

-- First pass: decide. An entry's args start at ARGV[a], its keys at KEYS[k].
local entries = {}
local created_here = {}  -- idempotency key -> {fingerprint, delivery id, outcome}
local taken_here = {}    -- delivery key -> true
local records_needed = 0
local arg_at = 5
for n = 1, tonumber(ARGV[4]) do
  local kind = ARGV[arg_at]
  local key_count = tonumber(ARGV[arg_at + 1])
  local arg_count = tonumber(ARGV[arg_at + 2])
  local k, a = key_at, arg_at + 3
  local entry = {kind, k, a, key_count}  -- then [5] verdict, [6] reply
  if kind == 'accept' then
    local on_conflict = ARGV[a + 7]
    local earlier = created_here[KEYS[k]]
    local fingerprint, delivery_id, outcome
    if earlier then
      fingerprint, delivery_id, outcome = earlier[1], earlier[2], earlier[3]
    else
      local existing = redis.call('HMGET', KEYS[k], 'fingerprint', 'delivery_id', 'outcome')
      fingerprint, delivery_id, outcome = existing[1], existing[2], existing[3]
    end
    if delivery_id then
      local same = 0
      if fingerprint == ARGV[a] then same = 1 end
      if same == 0 and on_conflict ~= 'report' then
        entry[5] = 'idempotency_conflict'
      else
        entry[5] = 'duplicate'
        entry[6] = {'duplicate', delivery_id, outcome, same}
      end
    elseif taken_here[KEYS[k + 1]] or redis.call('EXISTS', KEYS[k + 1]) == 1 then
      if on_conflict == 'report' then
        entry[5] = 'id_taken'
        entry[6] = {'id_taken', ARGV[a + 1]}
      else
        entry[5] = 'delivery_id_conflict'
      end
    else
      entry[5] = 'create'
      entry[6] = {'created', ARGV[a + 1]}
      created_here[KEYS[k]] = {ARGV[a], ARGV[a + 1], ARGV[a + 6]}
      taken_here[KEYS[k + 1]] = true
    end
    if on_conflict == 'ask' and CONFLICT_MESSAGES[entry[5]] then
      records_needed = records_needed + 1
    end
  else
    entry[5] = 'malformed'
    entry[6] = {'malformed', ''}
  end
  entries[n] = entry
  key_at = key_at + key_count
  arg_at = arg_at + 3 + arg_count
end
if records_needed > 0 then
  return {'records_needed', records_needed}
end

-- Second pass: write.
local batched = #entries > 1  -- one entry (the REST intake): no index key repeats
local zadd_keys, zadd_members = {}, {}
local function zadd_later(key, score, member)
  if not batched then
    redis.call('ZADD', key, score, member)
    return
  end
  local members = zadd_members[key]
  if not members then
    members = {}
    zadd_members[key] = members
    zadd_keys[#zadd_keys + 1] = key
  end
  members[#members + 1] = score
  members[#members + 1] = member
end

-- ARGV[first..]: member, ttl ms, score, n pairs, pairs...
local function write_malformed(record_key, index_key, first, code)
  local last = first + 3 + 2 * tonumber(ARGV[first + 3])
  redis.call('HSET', record_key, unpack(ARGV, first + 4, last))
  if code then
    redis.call('HSET', record_key, 'failure_code', code, 'failure_message',
      CONFLICT_MESSAGES[code])
  end
  redis.call('PEXPIRE', record_key, ARGV[first + 1])
  zadd_later(index_key, ARGV[first + 2], ARGV[first])
end

local results = {}
for n, entry in ipairs(entries) do
  local verdict, k, a = entry[5], entry[2], entry[3]
  if verdict == 'create' then
    local delivery_id = ARGV[a + 1]
    local delivery_last = a + 8 + 2 * tonumber(ARGV[a + 8])
    local attempt_last = delivery_last + 1 + 2 * tonumber(ARGV[delivery_last + 1])
    redis.call('HSET', KEYS[k + 1], unpack(ARGV, a + 9, delivery_last))
    if ARGV[a + 4] ~= '0' then
      redis.call('PEXPIRE', KEYS[k + 1], ARGV[a + 4])
    end
    if ARGV[a + 5] ~= '' then
      redis.call('HSET', KEYS[k + 2], unpack(ARGV, delivery_last + 2, attempt_last))
      zadd_later(KEYS[k + 3], ARGV[a + 5], delivery_id)
    end
    local first_index = k + 4
    if ARGV[a + 7] == 'record' then first_index = k + 6 end
    for i = first_index, k + entry[4] - 1 do
      zadd_later(KEYS[i], ARGV[a + 2], delivery_id)
    end
    redis.call('HSET', KEYS[k], 'fingerprint', ARGV[a], 'delivery_id', delivery_id,
      'outcome', ARGV[a + 6])
    redis.call('PEXPIRE', KEYS[k], ARGV[a + 3])
  elseif verdict == 'malformed' then
    write_malformed(KEYS[k], KEYS[k + 1], a, nil)
  elseif CONFLICT_MESSAGES[verdict] then
    local delivery_last = a + 8 + 2 * tonumber(ARGV[a + 8])
    local attempt_last = delivery_last + 1 + 2 * tonumber(ARGV[delivery_last + 1])
    write_malformed(KEYS[k + 4], KEYS[k + 5], attempt_last + 1, verdict)
    entry[6] = {'malformed', verdict}
  end
  results[n] = entry[6]
end

-- At most 500 members per ZADD: unpack must fit Lua's stack.
for _, key in ipairs(zadd_keys) do
  local members = zadd_members[key]
  for first = 1, #members, 1000 do
    redis.call('ZADD', key, unpack(members, first, math.min(first + 999, #members)))
  end
end

if covered > 0 then
  redis.call('SET', KEYS[1], ARGV[3])
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local handled = covered
  if top[2] then handled = handled + tonumber(top[2]) end
  -- %.0f: a Lua number passed as it is would be written with 14 digits at most
  redis.call('ZADD', KEYS[2], string.format('%.0f', handled), ARGV[3])
end
return {'ok', results}
