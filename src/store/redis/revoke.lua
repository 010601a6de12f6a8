-- KEYS[1]: the session. ARGV: prefix, session id, '1' when every key is on this server.
-- Returns the session's latest access-token exp, or nil if unknown.
return revoke(KEYS[1], ARGV[1], ARGV[2], 'ended', ARGV[3] == '1')
