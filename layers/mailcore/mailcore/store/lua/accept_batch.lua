-- Accept a batch of deliveries and malformed-command records in one atomic
-- step, optionally advancing a stream offset with them.
--
-- ARGV[1]  "1": KEYS[1] is a stream offset, advanced to ARGV[3] if it still
--          equals ARGV[2] (else nothing is written: another poller moved it)
--          "0": no offset (the REST intake)
-- ARGV[2]  expected offset        ARGV[3]  new offset
-- ARGV[4]  number of entries; then, per entry: kind, key count, arg count, args
--
-- kind "accept" (keys: idempotency record, delivery, first attempt, attempt
-- schedule, [malformed record, malformed index when on_conflict is
-- "record"], index sorted sets...; args: fingerprint, delivery id,
-- created_at_ms, idempotency ttl ms, delivery ttl ms ("0": none), first
-- attempt due ms ("": no attempt), outcome, on_conflict ("report"|"record"),
-- n delivery pairs, pairs..., n attempt pairs, pairs..., [malformed block])
--
-- kind "malformed" (keys: malformed record, malformed index; args: the
-- malformed block: index member, ttl ms, score, n pairs, pairs...)
--
-- Returns {"offset_moved", stored_offset} or {"ok", result per entry}:
--   {"created", delivery_id}
--   {"duplicate", existing_delivery_id, outcome, same_fingerprint 1|0}
--   {"id_taken", delivery_id}                    (report mode)
--   {"malformed", failure_code}                 ("" for kind "malformed": the caller knows it)
--
-- Each entry makes every check before its first write: Redis does not roll
-- back a script that fails half way.

local key_at = 1
if ARGV[1] == '1' then
  local stored = redis.call('GET', KEYS[1]) or '0-0'
  if stored ~= ARGV[2] then
    return {'offset_moved', stored}
  end
  key_at = 2
end

local function hset_from(key, args, first, pair_count)
  local flat = {}
  for i = first, first + 2 * pair_count - 1 do
    flat[#flat + 1] = args[i]
  end
  redis.call('HSET', key, unpack(flat))
  return first + 2 * pair_count
end

-- args[first..]: member, ttl ms, score, n pairs, pairs...
local function write_malformed(record_key, index_key, args, first, code, message)
  local pair_count = tonumber(args[first + 3])
  hset_from(record_key, args, first + 4, pair_count)
  if code then
    redis.call('HSET', record_key, 'failure_code', code, 'failure_message', message)
  end
  redis.call('PEXPIRE', record_key, args[first + 1])
  redis.call('ZADD', index_key, args[first + 2], args[first])
end

local function accept(keys, args)
  local record_mode = args[8] == 'record'
  local existing = redis.call('HMGET', keys[1], 'fingerprint', 'delivery_id', 'outcome')
  local delivery_pairs = tonumber(args[9])
  local attempt_count_at = 10 + 2 * delivery_pairs
  local attempt_pairs = tonumber(args[attempt_count_at])
  local malformed_at = attempt_count_at + 1 + 2 * attempt_pairs

  if existing[2] then
    local same = 0
    if existing[1] == args[1] then same = 1 end
    if record_mode and same == 0 then
      write_malformed(keys[5], keys[6], args, malformed_at, 'idempotency_conflict',
        'idempotency_key was already used for a different command')
      return {'malformed', 'idempotency_conflict'}
    end
    return {'duplicate', existing[2], existing[3], same}
  end
  if redis.call('EXISTS', keys[2]) == 1 then
    if record_mode then
      write_malformed(keys[5], keys[6], args, malformed_at, 'delivery_id_conflict',
        'delivery_id already belongs to another delivery')
      return {'malformed', 'delivery_id_conflict'}
    end
    return {'id_taken', args[2]}
  end

  local delivery_id = args[2]
  hset_from(keys[2], args, 10, delivery_pairs)
  if args[5] ~= '0' then
    redis.call('PEXPIRE', keys[2], args[5])
  end
  if args[6] ~= '' then
    hset_from(keys[3], args, attempt_count_at + 1, attempt_pairs)
    redis.call('ZADD', keys[4], args[6], delivery_id)
  end
  local first_index = 5
  if record_mode then first_index = 7 end
  for i = first_index, #keys do
    redis.call('ZADD', keys[i], args[3], delivery_id)
  end
  redis.call('HSET', keys[1], 'fingerprint', args[1], 'delivery_id', delivery_id,
    'outcome', args[7])
  redis.call('PEXPIRE', keys[1], args[4])
  return {'created', delivery_id}
end

local results = {}
local arg_at = 5
for _ = 1, tonumber(ARGV[4]) do
  local kind = ARGV[arg_at]
  local key_count = tonumber(ARGV[arg_at + 1])
  local arg_count = tonumber(ARGV[arg_at + 2])
  local keys, args = {}, {}
  for i = 1, key_count do keys[i] = KEYS[key_at + i - 1] end
  for i = 1, arg_count do args[i] = ARGV[arg_at + 2 + i] end
  key_at = key_at + key_count
  arg_at = arg_at + 3 + arg_count
  if kind == 'accept' then
    results[#results + 1] = accept(keys, args)
  else
    write_malformed(keys[1], keys[2], args, 1, nil, nil)
    results[#results + 1] = {'malformed', ''}
  end
end

if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], ARGV[3])
end
return {'ok', results}
