-- A call task failed with its job unfinished: put the job back, or end it as poison.
-- KEYS[1] job hash, KEYS[2] wake list
-- ARGV[1] namespace, ARGV[2] job id, ARGV[3] reason (redacted), ARGV[4] max crashes,
-- ARGV[5] retention seconds, ARGV[6] the crashed task's holder
-- Returns 1 (waits again), 2 (ended: internal_error) or 0 (ended, or held by another).
return crashed(ARGV[1], KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], KEYS[2], ARGV[6])
