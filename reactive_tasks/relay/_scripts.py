"""The Lua scripts that make a relay's lease checks and writes atomic in Redis.

Each touches the keys of one task only (one hash tag), so they run on a Redis Cluster too.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "PUBLISH", "RELEASE", "RENEW"]

#: KEYS: owner. ARGV: token, lease ms. 1 when the caller holds the lease now, else the holder.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return holder
"""

#: KEYS: owner. ARGV: token, lease ms. 1 when renewed, 0 when the lease is no longer ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS: owner. ARGV: token. Drops the lease if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: owner, events, latest. ARGV: token, entry id, record, max length, expiry ms (0: none).
#: Writes the record only while the caller holds the lease; an id not above the stream's last
#: (the sequence number was already published) makes XADD fail, so nothing is written twice.
#: A final record (expiry > 0) starts the expiry of the task's keys and ends the lease.
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], ARGV[2], 'd', ARGV[3])
redis.call('SET', KEYS[3], ARGV[3])
local expiry = tonumber(ARGV[5])
if expiry > 0 then
  redis.call('PEXPIRE', KEYS[2], expiry)
  redis.call('PEXPIRE', KEYS[3], expiry)
  redis.call('DEL', KEYS[1])
end
return 1
"""
