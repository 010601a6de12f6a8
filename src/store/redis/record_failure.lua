-- KEYS[1]: the counter. ARGV: now, window seconds, TTL. Opens a window when none is open, then
-- counts; one script so two concurrent failures can never both open a fresh window.
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'c', 't')
if not r[1] or tonumber(r[2]) <= now then
  local ends = string.format('%d', now + tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'c', '1', 't', ends)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {'1', ends}
end
local c = redis.call('HINCRBY', KEYS[1], 'c', 1)
return {tostring(c), r[2]}
