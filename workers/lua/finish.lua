-- End a job exactly once: only a job that is not yet terminal takes the result.
-- KEYS[1] job hash, KEYS[2] batch hash
-- ARGV[1] state ("completed" | "failed" | "cancelled" | "expired"), ARGV[2] result JSON,
-- ARGV[3] provider (or ""), ARGV[4] retention seconds, ARGV[5] namespace, ARGV[6] attempts,
-- ARGV[7] job id
return end_job(ARGV[5], KEYS[1], ARGV[7], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6])
