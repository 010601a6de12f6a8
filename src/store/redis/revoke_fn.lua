-- Shared by rotate.lua and revoke.lua: marks a session revoked, spends its current refresh token,
-- records it in the revoked set (scored by the latest access-token exp) and tells every replica.
-- Returns that exp as a string, or nil when the session is unknown.
local function revoke(prefix, sid)
  local skey = prefix .. 'session:' .. sid
  local s = redis.call('HMGET', skey, 'cur', 'amax')
  if not s[2] then
    return nil
  end
  redis.call('HSET', skey, 'rev', '1')
  local rkey = prefix .. 'refresh:' .. s[1]
  if redis.call('EXISTS', rkey) == 1 then
    redis.call('HSET', rkey, 'spent', '1')
  end
  redis.call('ZADD', prefix .. 'revoked', 'GT', s[2], sid)
  redis.call('PUBLISH', prefix .. 'revocations', sid .. ' ' .. s[2])
  return s[2]
end
