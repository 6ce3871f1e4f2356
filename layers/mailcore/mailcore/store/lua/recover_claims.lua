-- Take back claims whose deadline passed: the worker died, timed out or never
-- got the work. An attempt that never started is simply due again; one that
-- started is timed out (its outcome is unknown: the message may have left)
-- and the delivery goes to the next rung of the ladder or to the dead letters.
--
-- KEYS[1] claims   KEYS[2] attempt schedule   KEYS[3] dead-letter index
-- KEYS[4] status index `queued`   KEYS[5] status index `sending`
-- KEYS[6] status index `dead_letter`
-- then per candidate 4 keys: delivery, attempt n, attempt n+1, dead-letter entry
-- ARGV[1] now ms   ARGV[2] delivery ttl ms   ARGV[3] attempt ttl ms
-- ARGV[4] claims without a start after which a never-started attempt counts as timed out
-- then per candidate 3 args (from ARGV[5]): delivery id, attempt no as read,
-- next due ms ("" = ladder spent)
-- Returns {delivery_id, "rescheduled" | "retry" | "dead_letter" | "cleared"} per recovery.

local now = tonumber(ARGV[1])
local summary = 'claim expired before the worker recorded an outcome'
local results = {}
local candidates = (#KEYS - 6) / 4
for c = 0, candidates - 1 do
  local kd, ka, kn, kdl = KEYS[7 + 4 * c], KEYS[8 + 4 * c], KEYS[9 + 4 * c], KEYS[10 + 4 * c]
  local delivery_id, attempt_no, next_due = ARGV[5 + 3 * c], ARGV[6 + 3 * c], ARGV[7 + 3 * c]
  local deadline = redis.call('ZSCORE', KEYS[1], delivery_id)
  local d = redis.call('HMGET', kd, 'status', 'attempt_count', 'created_at_ms',
    'claims_without_start')
  if deadline and tonumber(deadline) < now and not d[1] then
    redis.call('ZREM', KEYS[1], delivery_id)
    results[#results + 1] = {delivery_id, 'cleared'}
  elseif deadline and tonumber(deadline) < now and d[2] == attempt_no then
    local attempt_status = redis.call('HGET', ka, 'status')
    redis.call('ZREM', KEYS[1], delivery_id)
    redis.call('HDEL', kd, 'claim_token', 'claim_deadline_ms')
    local unstarted = tonumber(d[4] or '0')
    if attempt_status == 'scheduled' and d[1] == 'queued'
        and unstarted < tonumber(ARGV[4]) then
      -- The work never reached a worker (a lost message): due again, no rung used.
      redis.call('ZADD', KEYS[2], now, delivery_id)
      results[#results + 1] = {delivery_id, 'rescheduled'}
    elseif attempt_status == 'scheduled' and d[1] == 'queued' then
      -- Claimed again and again, never started: something kills it before it
      -- begins. Count it as a timed-out attempt, so the ladder ends it.
      redis.call('HDEL', kd, 'claims_without_start')
      local target = 'queued'
      if next_due == '' then target = 'dead_letter' end
      if can_move(ATTEMPT_MOVES, 'scheduled', 'timed_out') then
        redis.call('HSET', ka, 'status', 'timed_out', 'outcome', 'transient_failure',
          'summary', 'never started: claimed ' .. unstarted .. ' times without a worker starting it',
          'finished_at_ms', ARGV[1])
        redis.call('PEXPIRE', ka, ARGV[3])
        if target == 'queued' then
          local next_no = tostring(tonumber(attempt_no) + 1)
          redis.call('HSET', kn, 'delivery_id', delivery_id, 'attempt_no', next_no,
            'status', 'scheduled', 'scheduled_for_ms', next_due, 'created_at_ms', ARGV[1])
          redis.call('ZADD', KEYS[2], next_due, delivery_id)
          redis.call('HSET', kd, 'attempt_count', next_no, 'updated_at_ms', ARGV[1],
            'last_outcome', 'transient_failure', 'last_summary', 'attempt never started')
          results[#results + 1] = {delivery_id, 'retry'}
        elseif can_move(DELIVERY_MOVES, 'queued', 'dead_letter') then
          redis.call('HSET', kd, 'status', 'dead_letter', 'updated_at_ms', ARGV[1],
            'last_outcome', 'transient_failure', 'last_summary', 'attempt never started')
          redis.call('PEXPIRE', kd, ARGV[2])
          redis.call('HSET', kdl, 'delivery_id', delivery_id, 'attempts', attempt_no,
            'last_outcome', 'transient_failure', 'last_summary', 'attempt never started',
            'dead_lettered_at_ms', ARGV[1])
          redis.call('PEXPIRE', kdl, ARGV[3])
          redis.call('ZADD', KEYS[3], ARGV[1], delivery_id)
          reindex(KEYS[4], KEYS[6], d[3], delivery_id)
          results[#results + 1] = {delivery_id, 'dead_letter'}
        end
      end
    elseif attempt_status == 'in_progress' and d[1] == 'sending' then
      local target = 'queued'
      if next_due == '' then target = 'dead_letter' end
      if can_move(ATTEMPT_MOVES, 'in_progress', 'timed_out')
          and can_move(DELIVERY_MOVES, 'sending', target) then
        redis.call('HSET', ka, 'status', 'timed_out', 'outcome', 'transient_failure',
          'summary', summary, 'finished_at_ms', ARGV[1])
        redis.call('PEXPIRE', ka, ARGV[3])
        if target == 'queued' then
          local next_no = tostring(tonumber(attempt_no) + 1)
          redis.call('HSET', kn, 'delivery_id', delivery_id, 'attempt_no', next_no,
            'status', 'scheduled', 'scheduled_for_ms', next_due, 'created_at_ms', ARGV[1])
          redis.call('ZADD', KEYS[2], next_due, delivery_id)
          redis.call('HSET', kd, 'status', 'queued', 'attempt_count', next_no,
            'updated_at_ms', ARGV[1], 'last_outcome', 'transient_failure', 'last_summary', summary)
          reindex(KEYS[5], KEYS[4], d[3], delivery_id)
          results[#results + 1] = {delivery_id, 'retry'}
        else
          redis.call('HSET', kd, 'status', 'dead_letter', 'updated_at_ms', ARGV[1],
            'last_outcome', 'transient_failure', 'last_summary', summary)
          redis.call('PEXPIRE', kd, ARGV[2])
          redis.call('HSET', kdl, 'delivery_id', delivery_id, 'attempts', attempt_no,
            'last_outcome', 'transient_failure', 'last_summary', summary,
            'dead_lettered_at_ms', ARGV[1])
          redis.call('PEXPIRE', kdl, ARGV[3])
          redis.call('ZADD', KEYS[3], ARGV[1], delivery_id)
          reindex(KEYS[5], KEYS[6], d[3], delivery_id)
          results[#results + 1] = {delivery_id, 'dead_letter'}
        end
      end
    else
      results[#results + 1] = {delivery_id, 'cleared'}
    end
  end
end
return results
