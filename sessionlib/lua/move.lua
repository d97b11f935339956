-- First step of a regeneration (login): marks the old session as moved to a new id and
-- returns everything it holds at that instant, so nothing written before is lost.
-- KEYS[1] old session hash; ARGV[1] the new id, ARGV[2] how long (ms) the marker lives.
-- Returns {1, fields} when marked (or already marked for this same new id: a retry),
-- {-1} when the session does not exist (logged out, revoked, expired: it must not come
-- back under any id), {-2} when another regeneration moved it first.
-- From the marker on, loads of the old id find no session and saves to it are refused;
-- the short-lived marker lets a slow request on the old id learn that it moved.
local meta = redis.call('HMGET', KEYS[1], '_abs', '_moved')
if meta[2] then
  if meta[2] == ARGV[1] then return {1, redis.call('HGETALL', KEYS[1])} end
  return {-2}
end
if not meta[1] then return {-1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(meta[1]) then
  redis.call('DEL', KEYS[1])
  return {-1}
end
redis.call('HSET', KEYS[1], '_moved', ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left > tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, redis.call('HGETALL', KEYS[1])}
