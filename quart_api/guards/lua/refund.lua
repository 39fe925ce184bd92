-- refund.lua: take back what check.lua charged to some limits, in one atomic step.
-- Used in a Redis Cluster only: a request's limits may live in several hash slots,
-- hence several check.lua calls; when one of them refuses (or finds a ban) while
-- another one charged, the charged slot group is refunded, so a refused request
-- costs none of its limits (all-or-nothing across slots, as within one).
--
-- KEYS[1..n]        the limit keys that check.lua charged (one slot)
-- ARGV[1+4(i-1)..]  per limit i, as check.lua got them: window_us, interval_us,
--                   cost_us, dry_run (unused)
-- Units: TATs in microseconds of the server's clock (TIME); returns milliseconds.
--
-- The charge (cost_us) is subtracted from the TAT. Charges of other requests made
-- meanwhile add to the same TAT, so the order does not matter. A debt left at or
-- below zero deletes the key; otherwise PX is shortened to the debt, so every key
-- keeps a TTL that ends when its debt is paid.
--
-- Returns per limit: remaining, reset_ms (the state without the refunded request).

local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 4
  local w, interval, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local d = 0
  local tat = redis.call('GET', KEYS[i])
  if tat then
    d = tonumber(tat) - cost - now
  end
  if d > 0 then
    redis.call('SET', KEYS[i], string.format('%.0f', now + d), 'PX', -fdiv(-d, 1000))
  else
    d = 0
    redis.call('DEL', KEYS[i])
  end
  out[2 * i - 1] = math.max(fdiv(w - d, interval), 0)
  out[2 * i] = -fdiv(-d, 1000)
end
return out
