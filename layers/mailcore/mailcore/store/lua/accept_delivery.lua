-- Accept one delivery atomically: reserve the idempotency key, store the
-- delivery, index it, and (optionally) store and schedule its first attempt.
--
-- KEYS[1]  idempotency record (hash)
-- KEYS[2]  delivery record (hash)
-- KEYS[3]  first attempt record (hash)
-- KEYS[4]  attempt schedule (sorted set)
-- KEYS[5..] index sorted sets, scored by created_at_ms
--
-- ARGV[1]  request fingerprint
-- ARGV[2]  delivery id
-- ARGV[3]  created_at_ms (index score)
-- ARGV[4]  idempotency TTL, ms
-- ARGV[5]  delivery TTL, ms, applied only when the delivery is born terminal ("0" = none)
-- ARGV[6]  first attempt due time, ms ("" = no attempt)
-- ARGV[7]  outcome recorded for replays
-- ARGV[8]  number of delivery field/value pairs (n)
-- ARGV[9 .. 8+2n]  delivery fields, then the attempt's field/value pairs
--
-- Returns {"created", delivery_id, outcome}
--      or {"duplicate", delivery_id, outcome, same_fingerprint (1|0)}
--      or {"id_taken", delivery_id}
--
-- Every check happens before the first write: a script that fails half way
-- is not rolled back by Redis, so it must never fail half way.

local existing = redis.call('HMGET', KEYS[1], 'fingerprint', 'delivery_id', 'outcome')
if existing[2] then
  local same = 0
  if existing[1] == ARGV[1] then same = 1 end
  return {'duplicate', existing[2], existing[3], same}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'id_taken', ARGV[2]}
end

local delivery_id = ARGV[2]
local created_at = ARGV[3]
local pair_count = tonumber(ARGV[8])
local first_field = 9
local attempt_field = first_field + 2 * pair_count

local delivery_fields = {}
for i = first_field, attempt_field - 1 do
  delivery_fields[#delivery_fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], unpack(delivery_fields))
if ARGV[5] ~= '0' then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end

if ARGV[6] ~= '' then
  local attempt_fields = {}
  for i = attempt_field, #ARGV do
    attempt_fields[#attempt_fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[3], unpack(attempt_fields))
  redis.call('ZADD', KEYS[4], ARGV[6], delivery_id)
end

for i = 5, #KEYS do
  redis.call('ZADD', KEYS[i], created_at, delivery_id)
end

redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'delivery_id', delivery_id,
  'outcome', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'created', delivery_id, ARGV[7]}
