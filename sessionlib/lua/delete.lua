-- Deletes a session (logout) and says where it had moved, so a logout that raced a
-- login also ends the session the login created: the logout wins.
-- KEYS[1] session hash. Returns {existed (0/1), user or '', moved-to id or ''}.
local meta = redis.call('HMGET', KEYS[1], '_user', '_moved', '_abs')
local existed = redis.call('DEL', KEYS[1])
if meta[2] then existed = 0 end
return {existed, meta[1] or '', meta[2] or ''}
