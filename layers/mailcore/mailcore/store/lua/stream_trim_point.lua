-- Where the poller may trim the command stream: the last entry it may delete.
--
-- KEYS[1]  the stream offset        KEYS[2]  the stream's trim marks
-- ARGV[1]  how many handled entries to keep (MAIL_STREAM_RETENTION)
--
-- The marks are written with the offset, in the same step (accept_batch.lua):
-- each is an entry id the offset moved to, scored by the number of entries
-- handled up to it. The answer is the newest mark at least ARGV[1] handled
-- entries behind the newest one, and the stored offset (the caller trims at
-- or below both); marks older than it are removed, as nothing will ask for
-- them again. The newest mark always stays: the next one counts on from it.
--
-- Returns {mark, offset}, or false when nothing may be trimmed yet.

local newest = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if not newest[2] then
  return false
end
local keep_from = string.format('%.0f', tonumber(newest[2]) - tonumber(ARGV[1]))
local found = redis.call('ZREVRANGEBYSCORE', KEYS[2], keep_from, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if not found[2] then
  return false
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. found[2])
return {found[1], redis.call('GET', KEYS[1]) or '0-0'}
