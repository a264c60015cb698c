"""The Redis side of `proxy/state/arith.py`: one script per store call, so one round trip, atomic.

One call may carry several requests' calls (the Redis store batches those that queue up
while a call is in flight); each is a group, evaluated and applied in turn, all or none
within the group, as if called alone. ARGV[1] lists the groups as `count:now` (keys,
epoch seconds) separated by `,`; ARGV[2] has one spec per key, `;` between specs and `,`
between a spec's fields (a kind letter, then numbers or a lease id; `-` for none). In an
call a group may start with the admission's marker key: an admission (`o`) sets it to `a`
unless it reads `c`; a settlement (`o`) applies only once (`s`), an undo (`u`) only after
an admission and never before one (`c`); a group skipped for it answers `x` figures. The
answer is one string of figures joined by `,`: Lua numbers would leave Redis truncated to
integers, and one string is far cheaper for the client to read than an array. Keys
expire when their value stops mattering.
"""

from __future__ import annotations

_COMMON = """
local EPS = 1e-5
local UNIT_EPS = 1e-3
local SLOT_RETRY = 1.0
local now = 0
local function fmt(x) return string.format('%.6f', x) end
local function ms(x) return string.format('%d', math.ceil(x * 1000)) end
local function remaining(tat, limit, period)
  local r = math.floor((now + period - tat) / (period / limit) + UNIT_EPS)
  if r < 0 then return 0 end
  return r
end
local function store_tat(key, tat)
  if tat > now then
    redis.call('SET', key, fmt(tat), 'PX', ms(tat - now))
  else
    redis.call('DEL', key)
  end
end
-- a quota is stored as 'used;expires_at': expired by the caller's clock even before Redis drops the key
local function read_quota(key)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  local sep = string.find(raw, ';', 1, true)
  if not sep or tonumber(string.sub(raw, sep + 1)) <= now then return 0 end
  return tonumber(string.sub(raw, 1, sep - 1)) or 0
end
local function store_quota(key, used, expires_at)
  if expires_at > now then
    redis.call('SET', key, fmt(used) .. ';' .. fmt(expires_at), 'PXAT', ms(expires_at))
  else
    redis.call('DEL', key)
  end
end
local groups = {}
for count, at in string.gmatch(ARGV[1], '(%d+):([^,]+)') do groups[#groups + 1] = {tonumber(count), tonumber(at)} end
local specs = {}
for spec in string.gmatch(ARGV[2], '[^;]+') do
  local fields = {}
  for field in string.gmatch(spec, '[^,]+') do fields[#fields + 1] = field end
  specs[#specs + 1] = fields
end
local out = {}
local first = 1
"""

ACQUIRE = (
    _COMMON
    + """
for g = 1, #groups do
  local last = first + groups[g][1] - 1
  now = groups[g][2]
  local writes = {}
  local ok = true
  for i = first, last do
    local key = KEYS[i]
    local kind, a, b, c, d = unpack(specs[i])
    local allowed, rem, reset, retry = true, 0, 0, 0
    if kind == 'o' then
      -- the admission's marker: cancelled by the client that gave up on this call, or applied now
      allowed = redis.call('GET', key) ~= 'c'
      writes[i] = {'o', a}
    elseif kind == 'r' then
      local limit, period, cost = tonumber(a), tonumber(b), tonumber(c)
      local base = tonumber(redis.call('GET', key))
      if not base or base < now then base = now end
      local new_tat = base + cost * period / limit
      local allow_at = new_tat - period
      if allow_at > now + EPS then
        allowed, rem, reset, retry = false, remaining(base, limit, period), base - now, allow_at - now
      else
        rem, reset = remaining(new_tat, limit, period), new_tat - now
        writes[i] = {'r', new_tat}
      end
    elseif kind == 's' then
      local limit, lease, ttl = tonumber(a), b, tonumber(c)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
      local held = redis.call('ZSCORE', key, lease)
      local count = redis.call('ZCARD', key)
      if not held and count >= limit then
        allowed, rem, reset, retry = false, 0, SLOT_RETRY, SLOT_RETRY
      else
        if not held then count = count + 1 end
        rem = limit - count
        writes[i] = {'s', lease, now + ttl}
      end
    else
      local limit, cost, expires_at = tonumber(a), tonumber(b), tonumber(c)
      local used = read_quota(key)
      if d == '1' then allowed = used + cost <= limit + EPS else allowed = used < limit end
      reset = expires_at - now
      if reset < 0 then reset = 0 end
      if allowed then
        rem = limit - used - cost
        writes[i] = {'q', used + cost, expires_at}
      else
        rem, retry = limit - used, reset
      end
      if rem < 0 then rem = 0 end
    end
    if not allowed then ok = false end
    out[#out + 1] = allowed and '1' or '0'
    out[#out + 1] = fmt(rem)
    out[#out + 1] = fmt(reset)
    out[#out + 1] = fmt(retry)
  end
  if ok then
    for i = first, last do
      local w = writes[i]
      local key = KEYS[i]
      if w[1] == 'o' then
        redis.call('SET', key, 'a', 'PX', w[2])
      elseif w[1] == 'r' then
        store_tat(key, w[2])
      elseif w[1] == 's' then
        redis.call('ZADD', key, fmt(w[3]), w[2])
        local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
        redis.call('PEXPIRE', key, ms(tonumber(latest[2]) - now))
      else
        store_quota(key, w[2], w[3])
      end
    end
  end
  first = last + 1
end
return table.concat(out, ',')
"""
)

ADJUST = (
    _COMMON
    + """
for g = 1, #groups do
  local last = first + groups[g][1] - 1
  now = groups[g][2]
  local skip = false
  for i = first, last do
    local key = KEYS[i]
    local kind, a, b, c = unpack(specs[i])
    if skip then
      out[#out + 1] = 'x'
    elseif kind == 'o' or kind == 'u' then
      -- the admission's marker (a: admitted, s: settled, c: cancelled). A settlement (o) applies unless
      -- settled or cancelled already (an attempt whose reply was lost); an undo (u) only what was admitted,
      -- and leaves 'c' so that an admission still on its way to Redis is not applied after it.
      local state = redis.call('GET', key)
      if state == 's' or state == 'c' or (kind == 'u' and state ~= 'a') then skip = true end
      if kind == 'o' and not skip then redis.call('SET', key, 's', 'PX', a) end
      if kind == 'u' and state ~= 's' and state ~= 'c' then redis.call('SET', key, 'c', 'PX', a) end
      out[#out + 1] = skip and 'x' or '0'
    elseif kind == 'l' then
      local renewed = '0'
      local held = redis.call('ZSCORE', key, a)
      if held and tonumber(held) > now then
        redis.call('ZADD', key, 'XX', fmt(now + tonumber(b)), a)
        local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
        redis.call('PEXPIRE', key, ms(tonumber(latest[2]) - now))
        renewed = '1'
      end
      out[#out + 1] = renewed
    elseif kind == 'r' then
      local limit, period, delta = tonumber(a), tonumber(b), tonumber(c)
      local base = tonumber(redis.call('GET', key))
      if not base or base < now then base = now end
      local new_tat = base + delta * period / limit
      if new_tat < now then new_tat = now end
      store_tat(key, new_tat)
      out[#out + 1] = fmt(remaining(new_tat, limit, period))
    elseif kind == 's' then
      redis.call('ZREM', key, a)
      out[#out + 1] = '0'
    else
      local used = read_quota(key) + tonumber(a)
      if used < 0 then used = 0 end
      store_quota(key, used, tonumber(b))
      out[#out + 1] = fmt(used)
    end
  end
  first = last + 1
end
return table.concat(out, ',')
"""
)
