-- Extend a lease if, and only if, this holder still has it.
-- KEYS[1] lease   ARGV[1] holder token   ARGV[2] lease length, ms
-- Returns 1 when extended, 0 when the lease expired or another holder took it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
