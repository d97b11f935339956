-- Adds a session to its user's index (sorted set sid -> absolute expiry ms), removes
-- the id it replaces (a regeneration), drops expired members and keeps the index alive
-- as long as its longest session. The per-user cap is enforced by the caller after the
-- session exists, from the live members only.
-- KEYS[1] user index; ARGV[1] sid, ARGV[2] expiry ms ('' for now + ARGV[3] seconds),
-- ARGV[4] the id this session replaces ('' for none). Idempotent: safe to retry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[3]) * 1000
if ARGV[2] ~= '' then expiry = tonumber(ARGV[2]) end
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[1], ARGV[4]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
