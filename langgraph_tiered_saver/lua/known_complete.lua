-- Mark a tenant's registry complete under ARG.token, the token read before Postgres' thread ids
-- were copied into it, only if that token is still current (no data loss, no write-through
-- since). 1 if marked.
if known_token() == ARG.token then
  redis.call("SET", KEY.known, ARG.token)
  return 1
end
return 0
