-- One payment against the shared online state, atomically (serving/redis_state.py).
--
-- Returns the state as it was before the event (the card's payments of the longest card
-- window, its known frauds; the merchant's counts at the plan's bounds and its distinct
-- cards of the last hour), then adds the event unless it is a duplicate or too late. The
-- worker computes the features from the returned state with the in-process engine's code,
-- so N workers give exactly what one engine fed the events in this script's order gives.
--
-- Times are IEEE doubles. The worker sends every bound already computed (exact decimal
-- reprs); doubles this script computes itself are stored with '%.17g', which round-trips.
--
-- Keys (prefix P): P.g global {clock, counters}; per card c:{ls, fr, base}, ce: payments
-- (zset by time; member txn\0merchant\0device\0amount\0lat\0lon\0cum_after), cf: frauds
-- (zset by event time; member label_time\0txn); per merchant m:{ls, wc}, me: payments
-- (member txn\0card), mf: frauds, mh: the cards of the payments after wc, with counts;
-- P.cards and P.merchants index the live ones by last use (for the caps and the sizes).

local P, txn, ts, card, merchant = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = tonumber(ts)
local payload, amount = ARGV[6], tonumber(ARGV[7])
local lateness, reach, dedup = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local card_from, slack = ARGV[11], tonumber(ARGV[12])
local ttl, txn_ttl, hour_cut = ARGV[13], ARGV[14], ARGV[15]
local max_cards, max_merchants = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local nb = tonumber(ARGV[16])
local bounds = {}
for i = 1, nb do bounds[i] = ARGV[16 + i] end
local nw = tonumber(ARGV[17 + nb])
local windows = {}
for i = 1, nw do
  local j = 17 + nb + 3 * (i - 1)
  windows[i] = {ARGV[j + 1], ARGV[j + 2], ARGV[j + 3] == '1'}
end

local INF = math.huge
local function num(v, default)
  if v then return tonumber(v) end
  return default
end
local function fmt(x) return string.format('%.17g', x) end

-- Byte order, as Python orders str ids (UTF-8 byte order is code-point order).
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- How many members sort before (ts, txn): earlier times, and equal times with smaller ids.
local function position(key)
  local n = redis.call('ZCOUNT', key, '-inf', '(' .. ts)
  local ties = redis.call('ZRANGEBYSCORE', key, ts, ts)
  for _, m in ipairs(ties) do
    if before(string.match(m, '^([^%z]*)'), txn) then n = n + 1 end
  end
  return n
end

local function cum_of(member) return string.match(member, '%z([^%z]*)$') end

-- The live entities of a kind, by last use: drop the ones idle beyond every window, and
-- beyond `cap` the least recently used (never `keep`, the one just used), with their keys.
local function bound(index, kind, keep, h, cap, prefixes)
  local idle = redis.call('ZREMRANGEBYSCORE', index, '-inf', h)
  if idle > 0 then redis.call('HINCRBY', P .. 'g', 'evicted:' .. kind .. ':idle', idle) end
  if cap <= 0 then return end
  local excess = redis.call('ZCARD', index) - cap
  if excess <= 0 then return end
  local out = redis.call('ZPOPMIN', index, excess + 1) -- one spare, in case `keep` is there
  local evicted = 0
  for i = 1, #out, 2 do
    local who = out[i]
    if who ~= keep and evicted < excess then
      for _, p in ipairs(prefixes) do redis.call('DEL', P .. p .. who) end
      evicted = evicted + 1
    else
      redis.call('ZADD', index, out[i + 1], who)
    end
  end
  redis.call('HINCRBY', P .. 'g', 'evicted:' .. kind .. ':cap', evicted)
end

local G = P .. 'g'
local clock = num(redis.call('HGET', G, 'clock'), -INF)
if t > clock then
  clock = t
  redis.call('HSET', G, 'clock', ts)
end
local watermark = clock - lateness
local horizon = watermark - reach
local seq = redis.call('HINCRBY', G, 'events', 1) -- the order Redis applied events in

local T = P .. 't:' .. txn
local seen = redis.call('GET', T)
local duplicate = false
if seen then
  duplicate = tonumber(string.match(seen, '%z([^%z]*)$')) > watermark - dedup
end
local kept = (not duplicate) and t >= watermark

-- The card, as it was.
local C, CE, CF = P .. 'c:' .. card, P .. 'ce:' .. card, P .. 'cf:' .. card
local c = redis.call('HMGET', C, 'ls', 'fr', 'base')
local card_ls = num(c[1], -INF)
local card_live = card_ls > horizon
local entries, frauds, cum_before, fr, r = {}, {}, '0', '', 0
if card_live then
  r = position(CE)
  local a = redis.call('ZCOUNT', CE, '-inf', card_from)
  if r > a then entries = redis.call('ZRANGE', CE, a, r - 1, 'WITHSCORES') end
  if a > 0 then
    cum_before = cum_of(redis.call('ZRANGE', CE, a - 1, a - 1)[1])
  else
    cum_before = c[3] or '0'
  end
  frauds = redis.call('ZRANGE', CF, 0, -1, 'WITHSCORES')
  fr = c[2] or ''
end

-- The merchant, as it was: counts at the bounds, known frauds per window, the hour's cards.
local M, ME, MF, MH = P .. 'm:' .. merchant, P .. 'me:' .. merchant, P .. 'mf:' .. merchant,
  P .. 'mh:' .. merchant
local m = redis.call('HMGET', M, 'ls', 'wc', 'll')
local merchant_live = num(m[1], -INF) > horizon
local mp, counts, cards1h = 0, {}, 0
local wc = num(m[2], -INF)
if merchant_live then
  mp = position(ME)
  for i = 1, nb do counts[i] = redis.call('ZCOUNT', ME, '-inf', bounds[i]) end
  local quick = num(m[3], -INF) <= t -- no label stamped after t: counting scores suffices
  for i = 1, nw do
    local after, untl, strict = '(' .. windows[i][1], windows[i][2], windows[i][3]
    if strict then untl = '(' .. untl end
    if quick then
      counts[nb + i] = redis.call('ZCOUNT', MF, after, untl)
    else
      local n = 0
      for _, f in ipairs(redis.call('ZRANGEBYSCORE', MF, after, untl)) do
        if tonumber(string.match(f, '^([^%z]*)')) <= t then n = n + 1 end
      end
      counts[nb + i] = n
    end
  end
  local in_order = mp == redis.call('ZCARD', ME)
  local cut = tonumber(hour_cut)
  if kept and in_order and cut >= wc then
    -- Slide the hour: the payments leaving it drop their card's count.
    local low = wc == -INF and '-inf' or '(' .. fmt(wc)
    for _, e in ipairs(redis.call('ZRANGEBYSCORE', ME, low, hour_cut)) do
      local who = string.match(e, '%z(.*)$')
      if redis.call('HINCRBY', MH, who, -1) <= 0 then redis.call('HDEL', MH, who) end
    end
    redis.call('HSET', M, 'wc', hour_cut)
    wc = cut
    cards1h = redis.call('HLEN', MH)
  else
    -- Out of order, duplicate or too late: count this event's own hour, change nothing.
    local a = redis.call('ZCOUNT', ME, '-inf', hour_cut)
    local distinct = {}
    if mp > a then
      for _, e in ipairs(redis.call('ZRANGE', ME, a, mp - 1)) do
        local who = string.match(e, '%z(.*)$')
        if not distinct[who] then
          distinct[who] = true
          cards1h = cards1h + 1
        end
      end
    end
  end
else
  for i = 1, nb + nw do counts[i] = 0 end
end

local state = 'added'
if duplicate then
  state = 'duplicate'
  redis.call('HINCRBY', G, 'duplicates', 1)
else
  redis.call('SET', T, card .. '\0' .. merchant .. '\0' .. ts, 'PX', txn_ttl)
  if not kept then
    state = 'too_late'
    redis.call('HINCRBY', G, 'too_late', 1)
  end
end

if kept then
  -- The card: insert at its place; the prefix sums after it shift by the amount.
  if not card_live then
    redis.call('DEL', C, CE, CF)
    r = 0
  end
  local base = redis.call('HGET', C, 'base') or '0'
  local prev = base
  if r > 0 then prev = cum_of(redis.call('ZRANGE', CE, r - 1, r - 1)[1]) end
  local later = redis.call('ZRANGE', CE, r, -1, 'WITHSCORES')
  for i = 1, #later, 2 do
    local old = later[i]
    local head = string.match(old, '^(.*)%z[^%z]*$')
    redis.call('ZREM', CE, old)
    redis.call('ZADD', CE, later[i + 1], head .. '\0' .. fmt(tonumber(cum_of(old)) + amount))
  end
  redis.call('ZADD', CE, ts, txn .. '\0' .. payload .. '\0' .. fmt(tonumber(prev) + amount))
  if t > card_ls or not card_live then redis.call('HSET', C, 'ls', ts) end
  local first = redis.call('ZRANGE', CE, 0, 0, 'WITHSCORES')
  if tonumber(first[2]) <= horizon - slack then
    local h = fmt(horizon)
    local last = redis.call('ZREVRANGEBYSCORE', CE, h, '-inf', 'LIMIT', 0, 1)
    redis.call('HSET', C, 'base', cum_of(last[1]))
    redis.call('ZREMRANGEBYSCORE', CE, '-inf', h)
  end
  redis.call('PEXPIRE', C, ttl)
  redis.call('PEXPIRE', CE, ttl)
  redis.call('PEXPIRE', CF, ttl)
  redis.call('ZADD', P .. 'cards', 'GT', ts, card)
  bound(P .. 'cards', 'card', card, fmt(horizon), max_cards, {'c:', 'ce:', 'cf:'})

  -- The merchant: the hour's cards hold every payment after wc.
  if not merchant_live then
    redis.call('DEL', M, ME, MF, MH)
    wc = -INF
  end
  redis.call('ZADD', ME, ts, txn .. '\0' .. card)
  if t > wc then redis.call('HINCRBY', MH, card, 1) end
  if not merchant_live or t > num(m[1], -INF) then redis.call('HSET', M, 'ls', ts) end
  local mfirst = redis.call('ZRANGE', ME, 0, 0, 'WITHSCORES')
  if tonumber(mfirst[2]) <= horizon - slack then
    local h = fmt(horizon)
    if wc < horizon then
      local low = wc == -INF and '-inf' or '(' .. fmt(wc)
      for _, e in ipairs(redis.call('ZRANGEBYSCORE', ME, low, h)) do
        local who = string.match(e, '%z(.*)$')
        if redis.call('HINCRBY', MH, who, -1) <= 0 then redis.call('HDEL', MH, who) end
      end
      redis.call('HSET', M, 'wc', h)
    end
    redis.call('ZREMRANGEBYSCORE', ME, '-inf', h)
  end
  redis.call('PEXPIRE', M, ttl)
  redis.call('PEXPIRE', ME, ttl)
  redis.call('PEXPIRE', MF, ttl)
  redis.call('PEXPIRE', MH, ttl)
  redis.call('ZADD', P .. 'merchants', 'GT', ts, merchant)
  bound(P .. 'merchants', 'merchant', merchant, fmt(horizon), max_merchants,
    {'m:', 'me:', 'mf:', 'mh:'})
end

return {state, fmt(clock), entries, cum_before, frauds, fr, mp, counts, cards1h, seq}
