-- Remove index members whose record has expired, checking and removing in one
-- step so a member that a new acceptance re-adds meanwhile is never lost.
--
-- KEYS[1] an index (sorted set)   KEYS[2..] the record key of each candidate
-- ARGV[1..] the candidates (index members), in the order of KEYS[2..]
-- Returns the number of members removed.

local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
