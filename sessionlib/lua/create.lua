-- Creates a session hash with its metadata and attributes, unless the key exists.
-- KEYS[1] session hash; ARGV: idle seconds, absolute timeout seconds, user ('' for
-- none), created ms ('' for now), absolute expiry ms ('' for now + absolute timeout),
-- then field/value pairs. Returns {absolute expiry ms, created ms}, or {0} for a zero
-- lifetime. Ids are 256 random bits, so an existing key can only be this same create,
-- run again by the retry layer after an unknown outcome: it reports that one.
local existing = redis.call('HMGET', KEYS[1], '_abs', '_created')
if existing[1] then return {tonumber(existing[1]), tonumber(existing[2])} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idle = tonumber(ARGV[1])
local created = now
if ARGV[4] ~= '' then created = tonumber(ARGV[4]) end
local abs = now + tonumber(ARGV[2]) * 1000
if ARGV[5] ~= '' then abs = tonumber(ARGV[5]) end
local ttl = math.min(idle * 1000, abs - now)
if ttl <= 0 then return {0} end
redis.call('HSET', KEYS[1], '_created', created, '_accessed', now, '_idle', idle,
  '_abs', abs, '_ver', 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], '_user', ARGV[3]) end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6, #ARGV)) end
redis.call('PEXPIRE', KEYS[1], ttl)
return {abs, created}
