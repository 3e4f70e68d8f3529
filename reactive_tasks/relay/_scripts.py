"""The Lua scripts that make a relay's lease checks and writes atomic in Redis.

Each but ``PUBLISH_MANY`` and ``RENEW_MANY`` touches the keys of one task only (one hash tag).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "PUBLISH_MANY", "RELEASE", "RENEW_MANY"]

#: KEYS: owner, latest. ARGV: token, lease ms. 1 when the caller holds the lease now, else the
#: holder, or "final" when the task's final record is there (only a final record expires): a
#: request read after the task ended must not start a watch.
ACQUIRE = """
if redis.call('PTTL', KEYS[2]) > 0 then
  return 'final'
end
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

#: KEYS: owners. ARGV: lease ms, then one token per owner. Per lease: 1 when renewed, 0 when it is
#: no longer the token's.
RENEW_MANY = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    out[i] = redis.call('PEXPIRE', KEYS[i], ARGV[1])
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS: owner. ARGV: token. Drops the lease if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: owner, events, latest, feed of each record. ARGV: the feeds' max length, then token,
#: entry id, record, max length, expiry ms (0: none) and tag of each. Writes a record only while
#: its writer holds the task's lease (else 0); an id not above the stream's last (that sequence
#: number was already published) makes XADD refuse it (-1), so nothing is written twice. A
#: written record is also appended, with its task's tag, to the feed readers follow. A final
#: record (expiry > 0) starts the expiry of the task's keys and ends the lease. One result per
#: record, 1 when written. (Several tasks' keys in one call: on a Redis Cluster, calls would be
#: split by hash slot, and the feeds would need their own.)
PUBLISH_MANY = """
local out = {}
for i = 1, #KEYS / 4 do
  local owner, events, latest, feed = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local a = 1 + 6 * (i - 1)
  if redis.call('GET', owner) ~= ARGV[a + 1] then
    out[i] = 0
  else
    local added = redis.pcall('XADD', events, 'MAXLEN', '~', ARGV[a + 4], ARGV[a + 2],
                              'd', ARGV[a + 3])
    if type(added) == 'table' and added.err then
      out[i] = -1
    else
      redis.call('SET', latest, ARGV[a + 3])
      redis.call('XADD', feed, 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[a + 6], 'd', ARGV[a + 3])
      local expiry = tonumber(ARGV[a + 5])
      if expiry > 0 then
        redis.call('PEXPIRE', events, expiry)
        redis.call('PEXPIRE', latest, expiry)
        redis.call('DEL', owner)
      end
      out[i] = 1
    end
  end
end
return out
"""
