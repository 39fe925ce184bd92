-- fail.lua: count one failure; ban when the count reaches the limit. Atomic (a script
-- runs alone), so concurrent failures can never let limit+1 through (no GET-then-INCR race).
--
-- KEYS[1] fail_key     failure count of the current window
-- KEYS[2] ban_key      exists while banned (value "1")
-- KEYS[3] pending_key  when ARGV[4] is 1: the failure is an attempt check.lua reserved
-- KEYS[3|4] offence_key optional (the last key): bans in the last max_ban_ms (escalation)
-- ARGV[1] limit        failures allowed per window; the limit-th failure bans
-- ARGV[2] window_ms    failure window, milliseconds
-- ARGV[3] max_ban_ms   cap of an escalated ban (and lifetime of the offence count)
-- ARGV[4] reserved     1: give back the reservation in pending_key as the failure counts
--
-- The window starts at the first failure: PEXPIRE is set only when INCR creates the
-- key, so later failures never extend it and a window always ends. Every key written
-- has a TTL (a fail_key found without one, written by something else, gets one).
-- Ban length: the rest of the failure window; with an offence_key, the n-th offence
-- bans for min(window_ms * 2^(n-1), max_ban_ms). Failures counted while a ban from
-- this window already exists (requests that were in flight) do not add an offence.
--
-- The reservation is given back in the same step as the failure is counted, so a
-- concurrent check sees the attempt either in flight or failed, never in neither.
--
-- Returns {banned (1|0), failures, ban_ms}.

local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local offence_key = KEYS[3]
if ARGV[4] == '1' then
  offence_key = KEYS[4]
  if (tonumber(redis.call('GET', KEYS[3]) or 0) or 0) > 0 then
    redis.call('DECR', KEYS[3])
  end
end
local count = redis.call('INCR', KEYS[1])
local ttl = window
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
else
  ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], window)
    ttl = window
  end
end
if count < limit then
  return {0, count, 0}
end
if count > limit then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then
    return {1, count, left}
  end
end
local ban = ttl
if offence_key then
  local max_ban = tonumber(ARGV[3])
  local offences = redis.call('INCR', offence_key)
  redis.call('PEXPIRE', offence_key, max_ban)
  ban = window * 2 ^ (offences - 1)
  if ban > max_ban then ban = max_ban end
end
redis.call('SET', KEYS[2], '1', 'PX', ban)
return {1, count, ban}
