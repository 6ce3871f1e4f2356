-- A worker starts the attempt it was given: only with the live claim token,
-- only for the attempt that is scheduled. Rendering happened just before:
-- success moves the delivery to `sending`; a render failure ends it `failed`.
--
-- KEYS[1] delivery   KEYS[2] attempt   KEYS[3] claims
-- KEYS[4] status index `queued`   KEYS[5] status index of the target status
-- ARGV[1] claim token   ARGV[2] now ms   ARGV[3] attempt no
-- ARGV[4] "rendered" | "render_failed"
-- ARGV[5] locale fallback used ("1" | "0" | "")   ARGV[6] resolved locale ("" for none)
-- ARGV[7] failure summary (render_failed)   ARGV[8] delivery ttl ms   ARGV[9] attempt ttl ms
-- ARGV[10] new claim deadline ms: the send gets a full claim period from its start
-- ARGV[11] rendered subject of a template delivery, for operators ("" to keep none)
-- Returns {"started"} | {"failed"} | {"refused", reason}

local now = tonumber(ARGV[2])
local d = redis.call('HMGET', KEYS[1], 'status', 'claim_token', 'claim_deadline_ms',
  'attempt_count', 'created_at_ms', 'delivery_id')
if not d[1] then return {'refused', 'delivery_missing'} end
if d[2] ~= ARGV[1] then return {'refused', 'claim_not_held'} end
if tonumber(d[3]) < now then return {'refused', 'claim_expired'} end
if d[4] ~= ARGV[3] then return {'refused', 'not_the_current_attempt'} end
local attempt_status = redis.call('HGET', KEYS[2], 'status')
if attempt_status ~= 'scheduled' then return {'refused', 'attempt_already_started'} end

if ARGV[4] == 'rendered' then
  if not (can_move(ATTEMPT_MOVES, 'scheduled', 'in_progress')
      and can_move(DELIVERY_MOVES, d[1], 'rendered')
      and can_move(DELIVERY_MOVES, 'rendered', 'sending')) then
    return {'refused', 'forbidden_transition'}
  end
  redis.call('HSET', KEYS[2], 'status', 'in_progress', 'started_at_ms', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[10], d[6])
  redis.call('HDEL', KEYS[1], 'claims_without_start')
  local fields = {'status', 'sending', 'updated_at_ms', ARGV[2], 'rendered_at_ms', ARGV[2],
    'claim_deadline_ms', ARGV[10]}
  if ARGV[5] ~= '' then
    fields[#fields + 1] = 'locale_fallback_used'
    fields[#fields + 1] = ARGV[5]
  end
  if ARGV[6] ~= '' then
    fields[#fields + 1] = 'resolved_locale'
    fields[#fields + 1] = ARGV[6]
  end
  if ARGV[11] ~= '' then
    fields[#fields + 1] = 'rendered_subject'
    fields[#fields + 1] = ARGV[11]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  reindex(KEYS[4], KEYS[5], d[5], d[6])
  return {'started'}
end

-- The template could not be rendered: the attempt ends `render_failed` before
-- any provider saw it, and the delivery fails for good (retrying renders the
-- same way).
if not (can_move(ATTEMPT_MOVES, 'scheduled', 'render_failed')
    and can_move(DELIVERY_MOVES, d[1], 'failed')) then
  return {'refused', 'forbidden_transition'}
end
redis.call('HSET', KEYS[2], 'status', 'render_failed', 'outcome', 'permanent_failure',
  'failure_code', 'render_failed', 'summary', ARGV[7], 'started_at_ms', ARGV[2],
  'finished_at_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
redis.call('HSET', KEYS[1], 'status', 'failed', 'updated_at_ms', ARGV[2],
  'failure_code', 'render_failed', 'last_summary', ARGV[7])
redis.call('HDEL', KEYS[1], 'claim_token', 'claim_deadline_ms', 'claims_without_start')
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZREM', KEYS[3], d[6])
reindex(KEYS[4], KEYS[5], d[5], d[6])
return {'failed'}
