-- GCRA over every key in KEYS, atomically (the arithmetic of gcra.rs).
--
-- The request is admitted only if every policy admits it, and only then is
-- it charged to them. The clock is Redis's own (TIME), so replicas with
-- skewed clocks agree. Times are integer microseconds (exact in a double
-- up to 2^53, far beyond any TAT).
--
-- KEYS[i]:      the TAT of policy i for this caller
-- ARGV[2i - 1]: the emission interval of policy i, in microseconds
-- ARGV[2i]:     the burst of policy i
-- Returns { admitted (1 or 0), then per key: allowed, remaining, reset µs, retry-after µs }.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local admitted = 1
local out = {}
local next_tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local capacity = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local ahead = next_tat - now
  if ahead > capacity then
    admitted = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = ahead - capacity
  else
    out[#out + 1] = 1
    out[#out + 1] = math.floor((capacity - ahead) / interval)
    out[#out + 1] = ahead
    out[#out + 1] = 0
  end
  next_tats[i] = next_tat
end
if admitted == 1 then
  for i, key in ipairs(KEYS) do
    -- The key lives until its TAT passes: then it means nothing any more.
    local ttl_ms = math.ceil((next_tats[i] - now) / 1000) + 1
    redis.call('SET', key, string.format('%.0f', next_tats[i]), 'PX', ttl_ms)
  end
end
table.insert(out, 1, admitted)
return out
