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
-- P.cards and P.merchants index the live ones by last use, to the hour (caps and sizes);
-- P.t:id a transaction id remembered for the dedup window (card\0merchant\0time), P.f:id
-- its time and request fingerprint (time\0fingerprint), P.a:id the answer given for it;
-- P.x:batch marks a batch one of whose events was refused: its later events are skipped.

local P, txn, ts, card, merchant = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = tonumber(ts)
local payload, amount = ARGV[6], tonumber(ARGV[7])
local lateness, reach, dedup = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local card_from, slack = ARGV[11], tonumber(ARGV[12])
local ttl, txn_ttl, hour_cut = ARGV[13], ARGV[14], ARGV[15]
local max_cards, max_merchants = tonumber(ARGV[#ARGV - 4]), tonumber(ARGV[#ARGV - 3])
local skew = tonumber(ARGV[#ARGV - 2])
local fingerprint = ARGV[#ARGV - 1] -- of the request's body; '' matches any
local batch = ARGV[#ARGV] -- a token shared by the scripts of one batch ('' alone)
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
-- A merchant's payment is txn\0card\0time: unique even for an id reused after the dedup window.
local function card_in(member) return string.match(member, '^[^%z]*%z([^%z]*)') end

-- The live entities of a kind, by last use: drop the ones idle beyond every window (every
-- 64 events, and before judging the cap), and beyond `cap` the least recently used (never
-- `keep`, the one just used), with their keys.

-- Refresh an entity's key TTLs and its place in the index when it is new or its last use
-- was in another hour of event time: the TTL (a day more than any window) is memory
-- management, and the caps evict by last use to the hour.
local function fresh(live, t, last, first)
  return not live or not first or math.floor(t / 3600) ~= math.floor(last / 3600)
end
local function bound(index, kind, keep, h, cap, prefixes, seq)
  local function prune()
    local idle = redis.call('ZREMRANGEBYSCORE', index, '-inf', h)
    if idle > 0 then redis.call('HINCRBY', P .. 'g', 'evicted:' .. kind .. ':idle', idle) end
  end
  if seq % 64 == 0 then prune() end -- the index only: idle keys expire by their TTL
  if cap <= 0 then return end
  if redis.call('ZCARD', index) <= cap then return end
  prune()
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

-- Move a merchant's hourly tally's cutoff from wc up to `cut` (a time's exact repr): the
-- payments in between leave it, each dropping its card's count.
local function slide(M, ME, MH, wc, cut)
  local low = wc == -INF and '-inf' or '(' .. fmt(wc)
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', ME, low, cut)) do
    local who = card_in(e)
    if redis.call('HINCRBY', MH, who, -1) <= 0 then redis.call('HDEL', MH, who) end
  end
  redis.call('HSET', M, 'wc', cut)
  return tonumber(cut)
end

-- Refuse the event, and with it the rest of its batch: nothing after it is applied.
local X = P .. 'x:' .. batch
if batch ~= '' and redis.call('EXISTS', X) == 1 then return {'skipped'} end
local function refuse(reply)
  if batch ~= '' then redis.call('SET', X, '1', 'PX', 60000) end
  return reply
end

-- The shared clock is Redis's: an event further ahead of it than the skew is refused before
-- anything is written (each host checked its own clock already; this catches a host whose
-- clock is off), and a stored clock beyond it (written before this guard) is pulled back.
local now = redis.call('TIME')
local latest = tonumber(now[1]) + tonumber(now[2]) / 1e6 + skew
if t > latest then return refuse({'ahead', fmt(latest)}) end
local G = P .. 'g'
local clock = num(redis.call('HGET', G, 'clock'), -INF)
local pulled = clock > latest
if pulled then clock = latest end
local moved = t > clock
if moved then clock = t end
local watermark = clock - lateness
local horizon = watermark - reach

-- A transaction id remembered within the dedup window is a retry: with another body
-- (fingerprint) it is refused before anything is written; with the same one it gets the
-- answer stored for it, if any. P.f and P.a count only if P.f has this payment's time (an
-- id reused after the window is a new payment; an older version writes neither).
local T = P .. 't:' .. txn
local seen = redis.call('GET', T)
local duplicate, answer = false, ''
if seen then
  local st = string.match(seen, '%z([^%z]*)$')
  duplicate = tonumber(st) > watermark - dedup
  if duplicate then
    local retry = redis.call('MGET', P .. 'f:' .. txn, P .. 'a:' .. txn)
    local kt, kf = '', ''
    if retry[1] then kt, kf = string.match(retry[1], '^([^%z]*)%z(.*)$') end
    if kt == st then
      if fingerprint ~= '' and kf ~= '' and kf ~= fingerprint then
        local sc, sm = string.match(seen, '^([^%z]*)%z([^%z]*)%z')
        return refuse({'conflict', sc, sm, st, kf})
      end
      answer = retry[2] or ''
    end
  end
end
if moved then
  redis.call('HSET', G, 'clock', ts)
elseif pulled then
  redis.call('HSET', G, 'clock', fmt(latest))
end
local seq = redis.call('HINCRBY', G, 'events', 1) -- the order Redis applied events in
local kept = (not duplicate) and t >= watermark

-- The card, as it was.
local C, CE, CF = P .. 'c:' .. card, P .. 'ce:' .. card, P .. 'cf:' .. card
local c = redis.call('HMGET', C, 'ls', 'fr', 'base', 'first')
local card_ls = num(c[1], -INF)
local card_live = card_ls > horizon
local entries, frauds, cum_before, fr, ties = {}, {}, '0', '', 0
if card_live then
  -- Its payments after card_from up to t; those at t with a larger id come after the event.
  entries = redis.call('ZRANGEBYSCORE', CE, '(' .. card_from, ts, 'WITHSCORES')
  while #entries > 0 and tonumber(entries[#entries]) == t do
    if before(string.match(entries[#entries - 1], '^([^%z]*)'), txn) then break end
    entries[#entries], entries[#entries - 1] = nil, nil
    ties = ties + 1 -- not before the event: it is late with respect to them
  end
  local prev = redis.call('ZREVRANGEBYSCORE', CE, card_from, '-inf', 'LIMIT', 0, 1)
  cum_before = prev[1] and cum_of(prev[1]) or (c[3] or '0')
  frauds = redis.call('ZRANGE', CF, 0, -1, 'WITHSCORES')
  fr = c[2] or ''
end

-- The merchant, as it was: counts at the bounds, known frauds per window, the hour's cards.
local M, ME, MF, MH = P .. 'm:' .. merchant, P .. 'me:' .. merchant, P .. 'mf:' .. merchant,
  P .. 'mh:' .. merchant
local m = redis.call('HMGET', M, 'ls', 'wc', 'll', 'first')
local merchant_live = num(m[1], -INF) > horizon
local mp, counts, cards1h, slid = 0, {}, 0, false
local wc = num(m[2], -INF)
if merchant_live then
  mp = position(ME)
  for i = 1, nb do counts[i] = redis.call('ZCOUNT', ME, '-inf', bounds[i]) end
  local quick = num(m[3], -INF) <= t -- no label stamped after t: counting scores suffices
  for i = 1, nw do counts[nb + i] = 0 end
  for i = 1, m[3] and nw or 0 do -- (ll is set by the first fraud label)
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
    wc = slide(M, ME, MH, wc, hour_cut)
    cards1h = redis.call('HLEN', MH)
    slid = cards1h > 0 -- a tally that still exists keeps its TTL
  else
    -- Out of order, duplicate or too late: count this event's own hour, change nothing.
    local a = redis.call('ZCOUNT', ME, '-inf', hour_cut)
    local distinct = {}
    if mp > a then
      for _, e in ipairs(redis.call('ZRANGE', ME, a, mp - 1)) do
        local who = card_in(e)
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
  redis.call('SET', P .. 'f:' .. txn, ts .. '\0' .. fingerprint, 'PX', txn_ttl)
  redis.call('DEL', P .. 'a:' .. txn) -- an answer kept for an earlier payment with this id
  if not kept then
    state = 'too_late'
    redis.call('HINCRBY', G, 'too_late', 1)
  end
end

-- After adding a payment at t to an entity (hash H): record its last use and earliest
-- payment; true when payments older than the horizon are due to be trimmed (a day's worth
-- at a time, as the in-process engine does).
local function added(H, live, ls, first)
  if not live or t > ls then redis.call('HSET', H, 'ls', ts) end
  first = live and num(first, INF) or INF
  if t < first then
    first = t
    redis.call('HSET', H, 'first', ts)
  end
  return first <= horizon - slack
end

-- Drop an entity's payments (sorted set E) at or before `h`; the payment just added stays.
local function trim(H, E, h)
  redis.call('ZREMRANGEBYSCORE', E, '-inf', h)
  redis.call('HSET', H, 'first', redis.call('ZRANGE', E, 0, 0, 'WITHSCORES')[2])
end

if kept then
  -- The card: insert at its place; the prefix sums after it shift by the amount.
  if not card_live then redis.call('DEL', C, CE, CF) end
  local prev = '0' -- the prefix sum before the event
  if #entries > 0 then
    prev = cum_of(entries[#entries - 1])
  elseif card_live then
    prev = cum_before
  end
  -- Payments after it exist only if ties were after it or it is not past the card's last
  -- use (ls: its latest payment or label time); usually neither, and nothing is asked.
  local later = {}
  if card_live and (ties > 0 or (t <= card_ls and redis.call('ZCOUNT', CE, '(' .. ts, '+inf') > 0)) then
    later = redis.call('ZRANGEBYSCORE', CE, ts, '+inf', 'WITHSCORES')
  end
  for i = 1, #later, 2 do
    local old = later[i]
    if tonumber(later[i + 1]) > t or not before(string.match(old, '^([^%z]*)'), txn) then
      local head = string.match(old, '^(.*)%z[^%z]*$')
      redis.call('ZREM', CE, old)
      redis.call('ZADD', CE, later[i + 1], head .. '\0' .. fmt(tonumber(cum_of(old)) + amount))
    end
  end
  redis.call('ZADD', CE, ts, txn .. '\0' .. payload .. '\0' .. fmt(tonumber(prev) + amount))
  if added(C, card_live, card_ls, c[4]) then
    local h = fmt(horizon)
    local last = redis.call('ZREVRANGEBYSCORE', CE, h, '-inf', 'LIMIT', 0, 1)
    if last[1] then redis.call('HSET', C, 'base', cum_of(last[1])) end
    trim(C, CE, h)
  end
  if fresh(card_live, t, card_ls, c[4]) then
    redis.call('PEXPIRE', C, ttl)
    redis.call('PEXPIRE', CE, ttl)
    redis.call('PEXPIRE', CF, ttl)
    redis.call('ZADD', P .. 'cards', 'GT', ts, card) -- last use, to the hour
  end
  bound(P .. 'cards', 'card', card, fmt(horizon), max_cards, {'c:', 'ce:', 'cf:'}, seq)

  -- The merchant: the hour's cards hold every payment after wc.
  if not merchant_live then
    redis.call('DEL', M, ME, MF, MH)
    wc = -INF
  end
  redis.call('ZADD', ME, ts, txn .. '\0' .. card .. '\0' .. ts)
  if t > wc and redis.call('HINCRBY', MH, card, 1) == 1 and not slid then
    redis.call('PEXPIRE', MH, ttl) -- the tally may have just been created (emptied before)
  end
  local merchant_ls = num(m[1], -INF)
  if added(M, merchant_live, merchant_ls, m[4]) then
    local h = fmt(horizon)
    if wc < horizon then wc = slide(M, ME, MH, wc, h) end -- trimmed payments leave the tally
    trim(M, ME, h)
  end
  if fresh(merchant_live, t, merchant_ls, m[4]) then
    for _, key in ipairs({M, ME, MF, MH}) do redis.call('PEXPIRE', key, ttl) end
    redis.call('ZADD', P .. 'merchants', 'GT', ts, merchant)
  end
  bound(P .. 'merchants', 'merchant', merchant, fmt(horizon), max_merchants,
    {'m:', 'me:', 'mf:', 'mh:'}, seq)
end

return {state, fmt(clock), entries, cum_before, frauds, fr, mp, counts, cards1h, seq, answer}
