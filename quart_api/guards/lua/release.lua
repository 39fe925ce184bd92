-- release.lua: give back attempts that check.lua reserved in failure tallies, in one
-- atomic step (a script runs alone: a concurrent check sees the tally before or after).
--
-- KEYS[1..k]        tally keys (hashes of member -> attempts, plus field 'total'), or
--                   plain counters (check.lua's pending_key, fail.lua's fail_key); one slot
-- ARGV[2i-1, 2i]    per key i: member ('' = a plain counter), count (attempts to give
--                   back; 0 = all of them)
-- Units: counts are attempts; nothing here is a duration (the tally's TTL is kept).
--
-- A plain counter goes down by count but never below zero (a counter that expired
-- meanwhile is not recreated without a TTL); count 0 deletes it (a success clearing
-- its client's failures).
--
-- At most what the member holds is taken: the member's field drops by it (removed at
-- 0) and so does the total. A tally whose total reaches 0 is deleted, so the next
-- failure starts a new window. A tally that expired meanwhile is left alone.
--
-- Returns the number of attempts given back, summed over the keys.

local given = 0
for i = 1, #KEYS do
  local member, count = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  if member == '' then
    local held = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
    if count == 0 then
      redis.call('DEL', KEYS[i])
      given = given + held
    elseif held > 0 then
      local taken = math.min(count, held)
      redis.call('DECRBY', KEYS[i], taken)
      given = given + taken
    end
  else
    local held = tonumber(redis.call('HGET', KEYS[i], member) or 0) or 0
    local taken = held
    if count > 0 and count < held then taken = count end
    if taken > 0 then
      if held - taken > 0 then
        redis.call('HINCRBY', KEYS[i], member, -taken)
      else
        redis.call('HDEL', KEYS[i], member)
      end
      if redis.call('HINCRBY', KEYS[i], 'total', -taken) <= 0 then
        redis.call('DEL', KEYS[i])
      end
      given = given + taken
    end
  end
end
return given
