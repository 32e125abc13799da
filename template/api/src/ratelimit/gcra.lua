-- GCRA over every key in KEYS, atomically (the arithmetic of gcra.rs),
-- taking up to TAKE requests' worth at once (a lease, see lease.rs).
--
-- The request is admitted only if every policy admits it, and only then is
-- it charged to them, so a request refused by one policy costs nothing
-- against another. The clock is Redis's own (TIME), so replicas with skewed
-- clocks agree. Times are integer microseconds (exact in a double up to
-- 2^53, far beyond any TAT).
--
-- ARGV[1]:      TAKE, the most requests to charge at once (1 without leases)
-- ARGV[2]:      REFUND, requests charged by an earlier lease and never used;
--               they are given back first (never beyond now)
-- KEYS[i]:      the TAT of policy i for this caller
-- ARGV[2i + 1]: the emission interval of policy i, in microseconds
-- ARGV[2i + 2]: the burst of policy i
-- Returns { granted (0 when refused), then per key: allowed, remaining,
-- reset µs, retry-after µs }. Granted is the fewest requests every policy
-- has room for, capped at TAKE; remaining is counted after the grant.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local take = tonumber(ARGV[1])
local refund = tonumber(ARGV[2])
local granted = take
local out = {}
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i + 1])
  local capacity = interval * tonumber(ARGV[2 * i + 2])
  local tat = (tonumber(redis.call('GET', key)) or now) - refund * interval
  if tat < now then tat = now end
  tats[i] = tat
  -- Requests this policy has room for now: each moves the TAT one interval.
  local room = math.floor((capacity - (tat - now)) / interval)
  if room < granted then granted = room end
  if room < 1 then
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = tat + interval - now - capacity
  else
    -- As if this one request were taken; a grant below overwrites it.
    out[#out + 1] = 1
    out[#out + 1] = room - 1
    out[#out + 1] = tat + interval - now
    out[#out + 1] = 0
  end
end
if granted < 1 then granted = 0 end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i + 1])
  local capacity = interval * tonumber(ARGV[2 * i + 2])
  local next_tat = tats[i] + granted * interval
  if granted > 0 then
    out[4 * i - 2] = math.floor((capacity - (next_tat - now)) / interval)
    out[4 * i - 1] = next_tat - now
  end
  if granted > 0 or refund > 0 then
    -- The key lives until its TAT passes: then it means nothing any more.
    local ttl_ms = math.ceil((next_tat - now) / 1000) + 1
    redis.call('SET', key, string.format('%.0f', next_tat), 'PX', ttl_ms)
  end
end
table.insert(out, 1, granted)
return out
