-- KEYS[1]: a counter. ARGV: now. Gives one attempt back inside the open window, never below 0.
local r = redis.call('HMGET', KEYS[1], 'c', 't')
if r[1] and tonumber(r[2]) > tonumber(ARGV[1]) and tonumber(r[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'c', -1)
end
return 1
