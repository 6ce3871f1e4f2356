-- Record the provider's answer to an attempt and move the delivery on: to a
-- settled status, back to the schedule for the next rung of the retry ladder,
-- or to the dead letters. Only the holder of a live claim may do this: a
-- worker whose claim expired (and was or will be recovered) is refused.
--
-- KEYS[1] delivery   KEYS[2] attempt   KEYS[3] claims   KEYS[4] attempt schedule
-- KEYS[5] next attempt   KEYS[6] status index `sending`   KEYS[7] status index of target
-- KEYS[8] dead-letter entry   KEYS[9] dead-letter index
-- ARGV[1] claim token   ARGV[2] now ms   ARGV[3] attempt no   ARGV[4] target delivery status
-- ARGV[5] attempt status   ARGV[6] provider outcome   ARGV[7] summary   ARGV[8] duration ms
-- ARGV[9] next attempt due ms (target `queued` only)   ARGV[10] delivery ttl ms
-- ARGV[11] attempt ttl ms   ARGV[12] failure code ("" for none)
-- Returns {"completed", target} | {"refused", reason}
--
-- The attempt keeps the token of the claim that completed it, so a worker
-- that tries again after losing the answer to its first try (the script ran,
-- the reply did not arrive) hears "completed", not a refusal.

local now = tonumber(ARGV[2])
local target = ARGV[4]
local d = redis.call('HMGET', KEYS[1], 'status', 'claim_token', 'claim_deadline_ms',
  'attempt_count', 'created_at_ms', 'delivery_id')
if not d[1] then return {'refused', 'delivery_missing'} end
if d[2] ~= ARGV[1] then
  if redis.call('HGET', KEYS[2], 'completed_by') == ARGV[1] then
    return {'completed', target}
  end
  return {'refused', 'claim_not_held'}
end
if tonumber(d[3]) < now then return {'refused', 'claim_expired'} end
if d[4] ~= ARGV[3] then return {'refused', 'not_the_current_attempt'} end
local attempt_status = redis.call('HGET', KEYS[2], 'status')
if not (can_move(ATTEMPT_MOVES, attempt_status, ARGV[5])
    and can_move(DELIVERY_MOVES, d[1], target)) then
  return {'refused', 'forbidden_transition'}
end
if target == 'queued' and ARGV[9] == '' then return {'refused', 'no_retry_time'} end

local attempt = {'status', ARGV[5], 'outcome', ARGV[6], 'summary', ARGV[7],
  'duration_ms', ARGV[8], 'finished_at_ms', ARGV[2], 'completed_by', ARGV[1]}
if ARGV[12] ~= '' then
  attempt[#attempt + 1] = 'failure_code'
  attempt[#attempt + 1] = ARGV[12]
end
redis.call('HSET', KEYS[2], unpack(attempt))
redis.call('PEXPIRE', KEYS[2], ARGV[11])

local delivery = {'status', target, 'updated_at_ms', ARGV[2], 'last_outcome', ARGV[6],
  'last_summary', ARGV[7]}
if ARGV[12] ~= '' then
  delivery[#delivery + 1] = 'failure_code'
  delivery[#delivery + 1] = ARGV[12]
end
if target == 'sent' then
  delivery[#delivery + 1] = 'sent_at_ms'
  delivery[#delivery + 1] = ARGV[2]
end
redis.call('HDEL', KEYS[1], 'claim_token', 'claim_deadline_ms')
redis.call('ZREM', KEYS[3], d[6])

if target == 'queued' then
  local next_no = tonumber(ARGV[3]) + 1
  delivery[#delivery + 1] = 'attempt_count'
  delivery[#delivery + 1] = tostring(next_no)
  redis.call('HSET', KEYS[5], 'delivery_id', d[6], 'attempt_no', tostring(next_no),
    'status', 'scheduled', 'scheduled_for_ms', ARGV[9], 'created_at_ms', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[9], d[6])
  redis.call('HSET', KEYS[1], unpack(delivery))
else
  redis.call('HSET', KEYS[1], unpack(delivery))
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
end
if target == 'dead_letter' then
  redis.call('HSET', KEYS[8], 'delivery_id', d[6], 'attempts', ARGV[3],
    'last_outcome', ARGV[6], 'last_summary', ARGV[7], 'dead_lettered_at_ms', ARGV[2])
  redis.call('PEXPIRE', KEYS[8], ARGV[11])
  redis.call('ZADD', KEYS[9], ARGV[2], d[6])
end
reindex(KEYS[6], KEYS[7], d[5], d[6])
return {'completed', target}
