-- ARGV: prefix, session id. Returns the session's latest access-token exp, or nil if unknown.
return revoke(ARGV[1], ARGV[2], 'ended')
