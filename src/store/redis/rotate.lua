-- KEYS[1]: the presented refresh token's key, KEYS[2]: the next one's.
-- ARGV: prefix, now, next refresh expires, next access exp, next hash (hex), next refresh TTL,
--       session TTL.
-- One script, so spending, reuse detection and recording the successor are one atomic step.
local now = tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'sid', 'exp', 'spent')
if not r[1] or tonumber(r[2]) <= now then
  return {'unknown'}
end
local sid = r[1]
if r[3] == '1' then
  local until_ = revoke(ARGV[1], sid)
  if not until_ then
    return {'unknown'}
  end
  return {'reused', sid, until_}
end
redis.call('HSET', KEYS[1], 'spent', '1')
local skey = ARGV[1] .. 'session:' .. sid
local s = redis.call('HMGET', skey, 'login', 'rev', 'amax')
if not s[1] or s[2] == '1' then
  return {'unknown'}
end
local amax = math.max(tonumber(s[3]), tonumber(ARGV[4]))
redis.call('HSET', skey, 'cur', ARGV[5], 'rexp', ARGV[3], 'amax', string.format('%d', amax))
redis.call('EXPIRE', skey, ARGV[7], 'GT')
redis.call('HSET', KEYS[2], 'sid', sid, 'exp', ARGV[3], 'spent', '0')
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {'rotated', sid, s[1]}
