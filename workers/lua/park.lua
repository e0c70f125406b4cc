-- Put a job (back) in the waiting set of its remaining targets, unless it already ended.
-- KEYS[1] job hash, KEYS[2] waiting zset, KEYS[3] wake list
-- ARGV[1] job id, ARGV[2] waitset signature, ARGV[3] excluded JSON, ARGV[4] score,
-- ARGV[5] namespace, ARGV[6] holder: only if it still holds the job ("": whoever does)
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or TERMINAL[state] then return 0 end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'holder') ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'excluded', ARGV[3])
park_job(ARGV[5], KEYS[1], ARGV[1], ARGV[2], ARGV[4], KEYS[3])
return 1
