-- Writes only the changed and removed attributes of a session, atomically with its TTL.
-- KEYS[1] session hash; ARGV[1] number of field/value pairs to set, then the pairs,
-- then the field names to delete. Returns the new version, or -1 when the session no
-- longer exists: a save never resurrects a session deleted (logged out) meanwhile.
local meta = redis.call('HMGET', KEYS[1], '_idle', '_abs')
if not meta[1] or not meta[2] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = math.min(tonumber(meta[1]) * 1000, tonumber(meta[2]) - now)
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
local pairs_end = 1 + 2 * tonumber(ARGV[1])
if pairs_end > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, pairs_end)) end
if #ARGV > pairs_end then redis.call('HDEL', KEYS[1], unpack(ARGV, pairs_end + 1, #ARGV)) end
redis.call('HSET', KEYS[1], '_accessed', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('HINCRBY', KEYS[1], '_ver', 1)
