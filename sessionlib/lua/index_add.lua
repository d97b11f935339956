-- Adds a session to its user's index (sorted set sid -> absolute expiry ms), drops
-- expired members, keeps the index alive as long as its longest session, and returns
-- the oldest members beyond the per-user cap for the caller to revoke.
-- KEYS[1] user index; ARGV[1] sid, ARGV[2] expiry ms ('' for now + ARGV[3] seconds),
-- ARGV[4] cap (0 = none). It runs in the same pipeline as create.lua, so both read
-- the same clock to within a millisecond.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[3]) * 1000
if ARGV[2] ~= '' then expiry = tonumber(ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
local cap = tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
if cap == 0 or count <= cap then return {} end
-- Oldest first, but never the session being added (ties in expiry are possible).
local evicted = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, count - cap)) do
  if sid ~= ARGV[1] and #evicted < count - cap then table.insert(evicted, sid) end
end
redis.call('ZREM', KEYS[1], unpack(evicted))
return evicted
