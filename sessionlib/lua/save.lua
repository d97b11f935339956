-- Writes only the changed and removed attributes of a session, atomically with its TTL.
-- KEYS[1] session hash; ARGV[1] operation id, ARGV[2] how long (ms) operation ids are
-- remembered, ARGV[3] number of field/value pairs to set, then the pairs, then the
-- field names to delete.
-- Returns the new version; -1 when the session no longer exists (a save never
-- resurrects a session deleted meanwhile); -2 when the session moved to a new id (a
-- login regenerated it): the write belongs to no session it may touch.
-- A retry of an operation that already took effect (its id is remembered) changes
-- nothing and returns the current version, so it never re-applies old values over a
-- newer write by someone else.
local meta = redis.call('HMGET', KEYS[1], '_idle', '_abs', '_moved', '_ops', '_ver')
if meta[3] then return -2 end
if not meta[1] or not meta[2] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = math.min(tonumber(meta[1]) * 1000, tonumber(meta[2]) - now)
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
-- '_ops' is "id@ms id@ms ...", oldest first: the operations applied within the window.
-- A busy session holds thousands, so it is searched as plain text and only its expired
-- head is parsed (each entry once), never the whole list on every save.
local ops = meta[4] or ''
local mine = ARGV[1] .. '@'
if string.sub(ops, 1, #mine) == mine or string.find(ops, ' ' .. mine, 1, true) then
  return tonumber(meta[5])
end
local from, window = 1, tonumber(ARGV[2])
while true do
  local _, last, at = string.find(ops, '^%S+@(%d+) *', from)
  if not last or now - tonumber(at) < window then break end
  from = last + 1
end
-- Each copy of a long string costs: cut the head only when there is one, and build the
-- new list in one concatenation.
if from > 1 then ops = string.sub(ops, from) end
local separator = ''
if ops ~= '' then separator = ' ' end
local pairs_end = 3 + 2 * tonumber(ARGV[3])
if pairs_end > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4, pairs_end)) end
if #ARGV > pairs_end then redis.call('HDEL', KEYS[1], unpack(ARGV, pairs_end + 1, #ARGV)) end
redis.call('HSET', KEYS[1], '_accessed', now, '_ops', ops .. separator .. mine .. now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('HINCRBY', KEYS[1], '_ver', 1)
