-- Loads a session hash and, when the throttle allows, slides its TTL; one round trip.
-- KEYS[1] session hash; ARGV[1] refresh throttle in ms.
-- Returns {0} when there is no (valid) session, {2} when it moved to a new id (a login
-- regenerated it: the old id grants nothing), else {refreshed, fields}.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {0} end
local meta = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == '_accessed' or name == '_idle' or name == '_abs' then
    meta[name] = tonumber(fields[i + 1])
  elseif name == '_moved' then
    return {2}
  end
end
if not (meta._accessed and meta._idle and meta._abs) then return {0} end
-- Redis' clock, not the caller's: every service then agrees on expiry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The writes below are pcalls: a master that may not write right now (min-replicas-to-write
-- unmet while its replicas are gone, or out of memory) still answers the read. An expired
-- session is gone either way; an unslid TTL slides at a later read.
if now >= meta._abs then
  redis.pcall('DEL', KEYS[1])
  return {0}
end
local idle_ms = meta._idle * 1000
local throttle = math.min(tonumber(ARGV[1]), math.floor(idle_ms / 4))
if now - meta._accessed < throttle then return {0, fields} end
local refused = redis.pcall('HSET', KEYS[1], '_accessed', now)
if type(refused) == 'table' and refused.err then return {0, fields} end
redis.call('PEXPIRE', KEYS[1], math.min(idle_ms, meta._abs - now))
return {1, fields}
