-- KEYS[1]: the session. ARGV: prefix, session id, generation, proof digest, secret digest,
--   next secret digest, next sealed (digests and sealed in hex), next refresh expires, next
--   access exp, now, grace seconds, session TTL, '1' when every key is on this server.
-- The decision of `SessionRecord::present` (src/store/session.rs), in one script so that it is
-- atomic across every replica sharing this Redis. On Cluster it touches the session's own slot
-- only; the store then moves the login index and records a theft (other slots).
local now = tonumber(ARGV[10])
local global = ARGV[13] == '1'
local s = redis.call('HMGET', KEYS[1], 'login', 'st', 'exp', 'kh', 'gen', 'cur', 'prev', 'ps', 'sealed', 'amax')
if not s[1] or s[4] ~= ARGV[4] then
  return {'unknown'}
end
if s[2] ~= 'live' then
  -- A token of an ended session: its revocation, should the step after the script that recorded
  -- it have failed on Cluster, is recorded again from here.
  return {'ended', s[10]}
end
if tonumber(s[3]) <= now then
  return {'unknown'}
end
local amax = string.format('%d', math.max(tonumber(s[10]), tonumber(ARGV[9])))
if ARGV[3] == s[5] and ARGV[5] == s[6] then
  redis.call('HSET', KEYS[1], 'prev', s[6], 'ps', ARGV[10], 'cur', ARGV[6], 'sealed', ARGV[7],
    'gen', string.format('%d', tonumber(s[5]) + 1), 'exp', ARGV[8], 'amax', amax, 'lr', ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'rc', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[12], 'GT')
  if global then
    local index = ARGV[1] .. 'login:{' .. s[1] .. '}'
    redis.call('ZADD', index, 'GT', ARGV[8], ARGV[2])
    redis.call('EXPIRE', index, ARGV[12], 'GT')
  end
  return {'rotated', s[1]}
end
local grace = tonumber(ARGV[11])
if grace > 0 and now - tonumber(s[8]) < grace and tonumber(ARGV[3]) + 1 == tonumber(s[5])
    and ARGV[5] == s[7] then
  redis.call('HSET', KEYS[1], 'amax', amax)
  return {'replayed', s[1], s[9]}
end
return {'reused', revoke(KEYS[1], ARGV[1], ARGV[2], 'stolen', global)}
