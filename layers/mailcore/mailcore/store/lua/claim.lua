-- Claim due deliveries for workers: out of the schedule, into the claims set
-- with a token and a deadline. Candidates come from a read just before; each
-- is re-checked here, so two claimers never claim the same delivery.
--
-- The claims set is also the count of claims in flight: when a bound is
-- given, only as many are claimed as keep that count within it, and the rest
-- stay in the schedule untouched. Counting and claiming in one script means
-- two claimers racing at the bound can never both go past it.
--
-- KEYS[1] attempt schedule   KEYS[2] claims   KEYS[3..] delivery records
-- ARGV[1] now ms   ARGV[2] claim deadline ms
-- ARGV[3] most claims in flight ("" for no bound)
-- ARGV[4..] per candidate: delivery id, claim token
-- Returns {delivery_id, attempt_no, token} for each delivery claimed.

local now = tonumber(ARGV[1])
local room = nil
if ARGV[3] ~= '' then
  room = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[2])
end
local claimed = {}
for i = 3, #KEYS do
  if room and room <= 0 then break end
  local at = 4 + 2 * (i - 3)
  local delivery_id, token = ARGV[at], ARGV[at + 1]
  local due = redis.call('ZSCORE', KEYS[1], delivery_id)
  if due and tonumber(due) <= now then
    local record = redis.call('HMGET', KEYS[i], 'status', 'attempt_count')
    redis.call('ZREM', KEYS[1], delivery_id)
    -- A schedule entry whose delivery is gone or no longer queued is stale:
    -- dropping it is all there is to do.
    if record[1] == 'queued' then
      redis.call('ZADD', KEYS[2], ARGV[2], delivery_id)
      redis.call('HSET', KEYS[i], 'claim_token', token, 'claim_deadline_ms', ARGV[2])
      -- Counts claims whose attempt never started (reset when one starts), so
      -- recovery can stop re-queuing work that keeps dying before it begins.
      redis.call('HINCRBY', KEYS[i], 'claims_without_start', 1)
      claimed[#claimed + 1] = {delivery_id, record[2], token}
      if room then room = room - 1 end
    end
  end
end
return claimed
