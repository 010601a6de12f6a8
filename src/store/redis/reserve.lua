-- KEYS: one counter per limit. ARGV: now, window seconds, TTL, then each key's limit.
-- Counts one attempt against every key or, when any is at its limit, against none: one script,
-- so concurrent attempts on any number of replicas can never pass a limit.
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local r = redis.call('HMGET', key, 'c', 't')
  if r[1] and tonumber(r[2]) > now and tonumber(r[1]) >= tonumber(ARGV[3 + i]) then
    return {'refused', r[2]}
  end
end
local ends = string.format('%d', now + tonumber(ARGV[2]))
for _, key in ipairs(KEYS) do
  local t = redis.call('HGET', key, 't')
  if not t or tonumber(t) <= now then
    redis.call('HSET', key, 'c', '1', 't', ends)
    redis.call('EXPIRE', key, ARGV[3])
  else
    redis.call('HINCRBY', key, 'c', 1)
  end
end
return {'granted'}
