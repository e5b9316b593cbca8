-- One label against the shared online state, atomically (serving/redis_state.py), with the
-- in-process engine's rules (`FeatureEngine.apply_label`). Keys as in redis_event.lua, plus
-- P.l:{txn} for labels already applied. Returns the outcome: applied, not_fraud,
-- duplicate, unknown, or {label_before_event, the event's time} (nothing changed).

local P, txn, is_fraud, lts = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local card, merchant, ets = ARGV[5], ARGV[6], ARGV[7]
local lateness, reach, ttl, label_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], ARGV[11]
local dedup = tonumber(ARGV[12])
local label_time = tonumber(lts)
local INF = math.huge
local function num(v, default)
  if v then return tonumber(v) end
  return default
end

local G = P .. 'g'
local L = P .. 'l:' .. txn
local clock = num(redis.call('HGET', G, 'clock'), -INF)
local known = ets
if ets == '' or card == '' or merchant == '' then
  -- Attributed through the transaction ids remembered for the dedup window (event time).
  card, merchant, ets = '', '', ''
  local seen = redis.call('GET', P .. 't:' .. txn)
  if seen then
    local c, m, e = string.match(seen, '^(.*)%z(.*)%z(.*)$')
    if tonumber(e) > clock - lateness - dedup then card, merchant, ets = c, m, e end
  end
  if known == '' then known = ets end
end
if known ~= '' and label_time < tonumber(known) then return {'label_before_event', known} end

redis.call('HINCRBY', G, 'labels', 1)
if not is_fraud then
  redis.call('HINCRBY', G, 'labels_not_fraud', 1)
  return 'not_fraud'
end
local horizon = clock - lateness - reach
local applied = redis.call('GET', L)
if applied and tonumber(applied) > horizon then -- time-checked, as the engine does
  redis.call('HINCRBY', G, 'labels_duplicate', 1)
  return 'duplicate'
end
if ets == '' then
  redis.call('HINCRBY', G, 'labels_unknown', 1)
  return 'unknown'
end
local event_time = tonumber(ets)
local h = string.format('%.17g', horizon)
redis.call('SET', L, ets, 'PX', label_ttl)
local member = lts .. '\0' .. txn

local C, CE, CF = P .. 'c:' .. card, P .. 'ce:' .. card, P .. 'cf:' .. card
local c = redis.call('HMGET', C, 'ls', 'fr')
local ls, fr = num(c[1], -INF), num(c[2], INF)
if ls <= horizon then
  redis.call('DEL', C, CE, CF)
  ls, fr = -INF, INF
end
if label_time < fr then redis.call('HSET', C, 'fr', lts) end
redis.call('ZREMRANGEBYSCORE', CF, '-inf', h)
redis.call('ZADD', CF, ets, member)
if label_time > ls then redis.call('HSET', C, 'ls', lts) end
redis.call('ZADD', P .. 'cards', 'GT', lts, card)
redis.call('PEXPIRE', C, ttl)
redis.call('PEXPIRE', CE, ttl)
redis.call('PEXPIRE', CF, ttl)

local M, ME, MF, MH = P .. 'm:' .. merchant, P .. 'me:' .. merchant, P .. 'mf:' .. merchant,
  P .. 'mh:' .. merchant
local m = redis.call('HMGET', M, 'ls', 'll')
local mls, ll = num(m[1], -INF), num(m[2], -INF)
if mls <= horizon then
  redis.call('DEL', M, ME, MF, MH)
  mls, ll = -INF, -INF
end
redis.call('ZREMRANGEBYSCORE', MF, '-inf', h)
redis.call('ZADD', MF, ets, member)
if label_time > ll then redis.call('HSET', M, 'll', lts) end
if event_time > mls then redis.call('HSET', M, 'ls', ets) end
redis.call('ZADD', P .. 'merchants', 'GT', ets, merchant)
for _, key in ipairs({M, ME, MF, MH}) do redis.call('PEXPIRE', key, ttl) end
redis.call('HINCRBY', G, 'labels_applied', 1)
return 'applied'
