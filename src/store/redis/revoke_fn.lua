-- Shared by rotate.lua and revoke.lua: ends a live session (`state`: 'ended' for logout or an
-- administrator, 'stolen' for reuse). With `global` (one server holds every key: standalone or
-- Sentinel) it also records it in the revoked set (scored by the latest access-token exp) and
-- tells every replica; on Cluster those keys live in other slots and the store does both right
-- after this script. Returns that exp as a string, or nil when the session is unknown.
local function revoke(skey, prefix, sid, state, global)
  local s = redis.call('HMGET', skey, 'st', 'amax')
  if not s[2] then
    return nil
  end
  if s[1] == 'live' then
    redis.call('HSET', skey, 'st', state)
  end
  if global then
    redis.call('ZADD', prefix .. 'revoked', 'GT', s[2], sid)
    redis.call('PUBLISH', prefix .. 'revocations', sid .. ' ' .. s[2])
  end
  return s[2]
end
