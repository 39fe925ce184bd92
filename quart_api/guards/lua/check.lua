-- check.lua: check and charge every GCRA limit of one request, read its bans and
-- check (and reserve) its failure tallies, in one atomic step (a Lua script runs
-- alone on the server: nothing interleaves).
--
-- KEYS[1..n]       one key per limit; value: the limit's TAT ("theoretical arrival
--                  time"), integer MICROseconds of the server's clock (Redis TIME)
-- KEYS[n+1..n+3m]  one triple per ban check: fail_key (failure count), ban_key
--                  (exists = banned), pending_key (attempts reserved and in flight;
--                  the fail_key again when the check reserves nothing)
-- KEYS[n+3m+1..]   one key per tally: a hash of member -> attempts, plus field 'total'
-- ARGV[1]          n, the number of limits
-- ARGV[2]          t, the number of tallies (m follows: (#KEYS - n - t) / 3)
-- ARGV[3+4(i-1)..] per limit i, whole microseconds precomputed by the caller
--                  (base.gcra_costs): window_us, interval_us (T), cost_us, dry_run (1|0)
-- ARGV[3+4n+3(k-1)..] per ban check k: limit (0 = read only), window_ms, here (this
--                  process's attempts of the client running without a reservation)
-- ARGV[3+4n+3m+3(j-1)..] per tally j: member ('' = read only), limit, window_ms
-- Units: TATs and ARGV in microseconds, every returned duration in milliseconds,
--   rounded up (never earlier than the truth). The clock is the server's (TIME),
--   the same for every client and worker.
--
-- Algorithm (GCRA): a limit of L requests per window has emission interval
--   T = ceil(window / L) us, and window_us = L * T (at most L us longer than asked,
--   so everything below is exact integer arithmetic, no products, no rounding).
--   d = max(TAT - now, 0) is the debt the client still owes.
--   The request fits iff d + cost*T <= window_us: `limit` requests at once all fit,
--   the limit+1-th does not, and a client spaced T apart never accrues debt.
--   An admitted request sets TAT = now + d', d' = d + cost*T, with PX = ceil(d'/1000):
--   every key has a TTL and vanishes once its debt is paid, so a window always ends.
--   remaining = floor((window_us - d') / T), reset_ms = ceil(d' / 1000),
--   retry_after_ms (refused) = ceil((d + cost*T - window_us) / 1000): the first
--   instant at which the same request fits, never earlier.
--
-- Bans: a ban_key that exists (PTTL != -2) bans; its PTTL is retry_after_ms.
--   A ban check with a limit also guards the attempts in flight: it refuses (banned,
--   retry_after_ms 1000) while failures + pending + here >= limit, and when the whole
--   request is allowed and the client has failures or here > 0, it reserves one
--   attempt: INCR pending_key, PEXPIRE window_ms (renewed by every reservation, so a
--   reservation lost with its process ends with the window). The caller turns the
--   reservation into a failure (fail.lua) or gives it back (release.lua).
--
-- Tallies: a tally whose total is >= its limit bans; its PTTL is retry_after_ms.
--   Otherwise, when the request is allowed and the tally names a member, one attempt
--   is reserved: HINCRBY member 1 and HINCRBY total 1. The first reservation creates
--   the hash and sets PEXPIRE window_ms; later ones never extend it (a window ends).
--   The caller keeps the reservation as a failure or gives it back (release.lua).
--
-- All-or-nothing: when a limit that is not a dry run refuses, a ban applies or a
-- tally is at its limit, nothing is written and every limit reports its state
-- without this request. A refusing dry-run limit is reported (allowed 0) but neither
-- refuses nor is charged.
--
-- Returns a flat array of integers:
--   [1] 1 when allowed (limits charged, tallies reserved), 0 when refused (nothing written)
--   per limit: allowed (1|0), remaining, reset_ms, retry_after_ms
--   per ban: banned (1|0), failures, retry_after_ms, reserved (1|0)
--   per tally: banned (1|0), total (after the reservation), retry_after_ms

-- floor(a / b) for integers, exact below 2^53 (a double quotient may round up).
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function cdiv(a, b)
  return -fdiv(-a, b)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n, t_count = tonumber(ARGV[1]), tonumber(ARGV[2])
local m = (#KEYS - n - t_count) / 3
local debts, fits = {}, {}
local ok = true

for i = 1, n do
  local a = 3 + (i - 1) * 4
  local d = 0
  local tat = redis.call('GET', KEYS[i])
  if tat then
    d = tonumber(tat) - now
    if d < 0 then d = 0 end
  end
  debts[i] = d
  fits[i] = d + tonumber(ARGV[a + 2]) <= tonumber(ARGV[a])
  if not fits[i] and ARGV[a + 3] ~= '1' then ok = false end
end

local out = {0}
local o = 2 + n * 4
local reserve_bans = {}
for k = 1, m do
  local key = n + 3 * (k - 1) + 1
  local a = 3 + 4 * n + 3 * (k - 1)
  local limit, here = tonumber(ARGV[a]), tonumber(ARGV[a + 2])
  local ttl = redis.call('PTTL', KEYS[key + 1])
  local failures = tonumber(redis.call('GET', KEYS[key]) or 0) or 0
  out[o + 1], out[o + 3] = failures, 0
  if ttl ~= -2 then
    ok = false
    out[o] = 1
    if ttl > 0 then out[o + 2] = ttl else out[o + 2] = 0 end
  elseif limit > 0 then
    local pending = tonumber(redis.call('GET', KEYS[key + 2]) or 0) or 0
    if failures + pending + here >= limit then
      ok = false
      out[o], out[o + 2] = 1, 1000
    else
      out[o], out[o + 2] = 0, 0
      if failures > 0 or here > 0 then reserve_bans[k] = true end
    end
  else
    out[o], out[o + 2] = 0, 0
  end
  o = o + 4
end
local totals = {}
local tally_args = 3 + 4 * n + 3 * m
for j = 1, t_count do
  local key = KEYS[n + 3 * m + j]
  local limit = tonumber(ARGV[tally_args + 3 * (j - 1) + 1])
  totals[j] = tonumber(redis.call('HGET', key, 'total') or 0) or 0
  if totals[j] >= limit then ok = false end
end

for i = 1, n do
  local a = 3 + (i - 1) * 4
  local w, interval, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local d = debts[i]
  o = 2 + (i - 1) * 4
  if fits[i] then
    if ok then
      d = d + cost
      if d > 0 then
        redis.call('SET', KEYS[i], string.format('%.0f', now + d), 'PX', cdiv(d, 1000))
      end
    end
    out[o], out[o + 3] = 1, 0
  else
    out[o], out[o + 3] = 0, cdiv(d + cost - w, 1000)
  end
  out[o + 1] = math.max(fdiv(w - d, interval), 0)
  out[o + 2] = cdiv(d, 1000)
end

if ok then
  for k = 1, m do
    if reserve_bans[k] then
      local key = KEYS[n + 3 * (k - 1) + 3]
      redis.call('INCR', key)
      redis.call('PEXPIRE', key, tonumber(ARGV[3 + 4 * n + 3 * (k - 1) + 1]))
      out[2 + n * 4 + (k - 1) * 4 + 3] = 1
    end
  end
end

for j = 1, t_count do
  local key = KEYS[n + 3 * m + j]
  local a = tally_args + 3 * (j - 1)
  local member, limit, window = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local total = totals[j]
  o = 2 + n * 4 + m * 4 + (j - 1) * 3
  out[o], out[o + 2] = 0, 0
  if total >= limit then
    local ttl = redis.call('PTTL', key)
    out[o] = 1
    if ttl > 0 then out[o + 2] = ttl end
  elseif ok and member ~= '' then
    redis.call('HINCRBY', key, member, 1)
    total = redis.call('HINCRBY', key, 'total', 1)
    if redis.call('PTTL', key) < 0 then
      redis.call('PEXPIRE', key, window)
    end
  end
  out[o + 1] = total
end

if ok then out[1] = 1 end
return out
