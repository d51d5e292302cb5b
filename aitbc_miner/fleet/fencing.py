"""Outcomes in the fleet's care, and the fencing that lets exactly one rig deliver a job.

Before each send of an outcome the rig runs :data:`PERMIT` (one Lua script, so one atomic
step in Redis, on Redis's own clock):

- the first time, it mirrors the outcome into ``P outcome:{job}`` (owner = this rig) and
  adds the job to ``P outcomes:{rig}``: from then on the outcome survives this rig;
- a job another rig already delivered answers ``done`` (this rig settles it unsent);
- a job whose owner is another rig answers ``busy`` while that rig's lease (plus one
  grace period) lasts; after that the asking rig adopts it (becomes its owner);
- this rig's own lease must be live, else ``expired`` (it rejoins first);
- otherwise the token ``P outcome:{job}.token`` goes up by one, and that fencing token
  goes with this send.

After the coordinator settles the send, :data:`DONE` marks the job delivered, but only if
the token is still the latest and this rig sent it: a rig that lost the job meanwhile
(it was taken for dead) learns that its send was stale. A done job keeps its hash (no
body) for ``DONE_TTL_S`` so that a rig coming back with an old copy never sends it.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE_TTL_S = 14 * 86400  # a delivered job's marker outlives any rig that may come back

# KEYS: outcome:{job}, rigs. ARGV: rig, prefix, job, grace_s, mirror fields (JSON object).
PERMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' then
  return {'done', redis.call('HGET', KEYS[1], 'delivered_by') or '?'}
end
local mine = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not mine or tonumber(mine) <= now then
  return {'expired', ''}
end
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  local fields = cjson.decode(ARGV[5])
  for k, v in pairs(fields) do
    redis.call('HSET', KEYS[1], k, tostring(v))
  end
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'state', 'staged', 'token', '0')
  redis.call('SADD', ARGV[2] .. 'outcomes:' .. ARGV[1], ARGV[3])
elseif owner ~= ARGV[1] then
  local lease = redis.call('ZSCORE', KEYS[2], owner)
  if lease and tonumber(lease) + tonumber(ARGV[4]) > now then
    return {'busy', owner}
  end
  redis.call('SREM', ARGV[2] .. 'outcomes:' .. owner, ARGV[3])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'adopted_from', owner)
  redis.call('SADD', ARGV[2] .. 'outcomes:' .. ARGV[1], ARGV[3])
end
redis.call('HDEL', ARGV[2] .. 'running:' .. ARGV[1], ARGV[3])
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'sender', ARGV[1], 'sent_at', tostring(now))
return {'go', tostring(token)}
"""

# KEYS: outcome:{job}. ARGV: rig, prefix, job, token, ttl_s.
DONE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[4]
    or redis.call('HGET', KEYS[1], 'sender') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'delivered_by', ARGV[1])
redis.call('HDEL', KEYS[1], 'body', 'payload', 'constraints')
redis.call('SREM', ARGV[2] .. 'outcomes:' .. ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
"""

# KEYS: outcome:{job}. ARGV: rig, token. The send provably did not reach the coordinator
# (refused before acting, or never sent): back to "staged", so a rig that adopts it later
# knows it was never delivered.
RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[2]
    and redis.call('HGET', KEYS[1], 'sender') == ARGV[1]
    and redis.call('HGET', KEYS[1], 'state') == 'sending' then
  redis.call('HSET', KEYS[1], 'state', 'staged')
  return 1
end
return 0
"""

# KEYS: outcome:{job}, running:{rig}. ARGV: rig, ttl_s, job. A job this rig settled while Redis
# was away (never mirrored): mark it done so nobody runs or sends it again.
SETTLED_ALONE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'done' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'delivered_by', ARGV[1])
  redis.call('HDEL', KEYS[1], 'body', 'payload', 'constraints')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return redis.call('HDEL', KEYS[2], ARGV[3])
"""

# KEYS: rigs. ARGV: rig, lease_s. The lease, on Redis's clock; returns its new end.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], until_, ARGV[1])
return {tostring(now), tostring(until_)}
"""

# KEYS: rigs. ARGV: grace_s. Rigs whose lease ended more than a grace period ago.
GONE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. tostring(now - tonumber(ARGV[1])))
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :data:`PERMIT` said: ``go`` (with ``token``), ``done`` (``by``), ``busy``
    (``by`` = the live owner) or ``expired`` (this rig's lease is not live)."""

    word: str
    token: int | None = None
    by: str | None = None

    @classmethod
    def of(cls, answer: object) -> Verdict:
        if not isinstance(answer, list | tuple) or not answer:
            return cls("busy", by="?")
        word = str(answer[0])
        detail = str(answer[1]) if len(answer) > 1 else ""
        if word == "go" and detail.isdigit():
            return cls("go", token=int(detail))
        if word in ("done", "busy"):
            return cls(word, by=detail or "?")
        return cls("expired")
