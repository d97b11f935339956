-- Writes only the changed and removed attributes of a session, atomically with its TTL.
-- KEYS[1] session hash, KEYS[2] the session's recent operation ids (a sorted set, id ->
-- ms; same slot); ARGV[1] operation id, ARGV[2] how long (ms) operation ids are
-- remembered, ARGV[3] number of field/value pairs to set, then the pairs, then the
-- field names to delete.
-- Returns the new version; -1 when the session no longer exists (a save never
-- resurrects a session deleted meanwhile); -2 when the session moved to a new id (a
-- login regenerated it): the write belongs to no session it may touch.
-- A retry of an operation that already took effect (its id is remembered) changes
-- nothing and returns the current version, so it never re-applies old values over a
-- newer write by someone else. The ids live beside the hash, not in it: every load reads
-- the whole hash, and a busy session remembers hundreds of them.
local meta = redis.call('HMGET', KEYS[1], '_idle', '_abs', '_moved', '_ver')
if meta[3] then return -2 end
if not meta[1] or not meta[2] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = math.min(tonumber(meta[1]) * 1000, tonumber(meta[2]) - now)
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
-- The first write: if Redis refuses writes now (out of memory, too few replicas), the
-- script stops here with nothing applied and nothing remembered.
if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1]) == 0 then return tonumber(meta[4]) end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('PEXPIRE', KEYS[2], window)
local pairs_end = 3 + 2 * tonumber(ARGV[3])
if pairs_end > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4, pairs_end)) end
if #ARGV > pairs_end then redis.call('HDEL', KEYS[1], unpack(ARGV, pairs_end + 1, #ARGV)) end
redis.call('HSET', KEYS[1], '_accessed', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('HINCRBY', KEYS[1], '_ver', 1)
