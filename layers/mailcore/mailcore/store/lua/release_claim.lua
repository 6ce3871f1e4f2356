-- Give claims back that could not be handed to a worker (the queue refused
-- them): due again at once, so the scheduler retries within one poll.
--
-- KEYS[1] attempt schedule   KEYS[2] claims   KEYS[3..] delivery records
-- ARGV[1] now ms   ARGV[2..] per claim: its token
-- Returns the number released.

local released = 0
for i = 3, #KEYS do
  local token = ARGV[i - 1]
  local record = redis.call('HMGET', KEYS[i], 'claim_token', 'delivery_id', 'status')
  if record[1] == token and record[3] == 'queued' then
    redis.call('HDEL', KEYS[i], 'claim_token', 'claim_deadline_ms')
    redis.call('ZREM', KEYS[2], record[2])
    redis.call('ZADD', KEYS[1], ARGV[1], record[2])
    released = released + 1
  end
end
return released
