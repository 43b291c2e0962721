-- quota.lua - quota-milter's one atomic accounting step
--
-- Run with EVALSHA by counters.c; Redis runs a script alone, so the check
-- and the increment below cannot interleave with another milter's. Every
-- key is checked before the first write, so a bad key makes the script
-- fail without having written anything.
--
-- KEYS[1]  account hash  PREFIXaccount:{A}      plan, limit, suspended
-- KEYS[2]  usage hash    PREFIXusage:{A}:M      total, messages, CATEGORY,
--                                               refused, would_refuse
-- KEYS[3]  warned hash   PREFIXwarned:{A}:M     percents announced, "exhausted",
--                                               "replay:ID" of journal entries applied
-- KEYS[4]  events stream PREFIXevents
-- KEYS[5]  charge string PREFIXcharge:{A}:ID     a charge's outcome, 10 minutes
--
-- ARGV[1]  op: "peek" (writes nothing), "charge", "refused", "replay", "cancel"
-- ARGV[2]  units, integer >= 0
-- ARGV[3]  category field of the usage hash, "" for none
-- ARGV[4]  monitor: "1" counts what does not fit (status "over"), "0" refuses
-- ARGV[5]  expireat: unix time at which the usage and warned hashes go
-- ARGV[6]  month "YYYY-MM" (for events)
-- ARGV[7]  account (for events)
-- ARGV[8]  units refused earlier at RCPT stage, integer >= 0
-- ARGV[9]  replay, cancel: the journal entry's id, "" for the other ops
-- ARGV[10] default plan for accounts without one, "" for none
-- ARGV[11] warn percents, "80,100", "" for none
-- ARGV[12], ARGV[13], ...  the plan table: name, monthly (-1 unlimited)
-- (ARGV[10] on only change with the conf: counters.c encodes them once.)
--
-- "replay" applies a count journaled while Redis was away: a charge in
-- monitor mode (counted whether it fits or not), done only if the
-- warned hash has no field "replay:ID" yet, which it then sets; so an
-- entry replayed twice counts once while the month's hashes live. When
-- the id is a charge's (16 hex digits), the charge key is set too, so
-- that the charge itself, should it still be on its way, counts nothing.
--
-- "cancel" settles a charge whose reply never came (Redis hung or died,
-- the connection broke, the milter was killed) and whose message was not
-- accepted: the charge key of the id ARGV[9] is set to "cancelled", so
-- a charge still on its way counts nothing; a charge that did run and
-- counted, or its journal entry replayed, is taken back (total, messages,
-- category, would_refuse). Its RCPT-stage refusals (ARGV[8]) stay recorded
-- if it ran, and are not recorded if it did not. The outcome lives 10
-- minutes: a cancel that comes later takes nothing back.
--
-- Returns {status, plan, limit, used}:
--   status  ok, over, exhausted, no_mail, suspended, no_plan, unknown_plan
--           (a replay already applied, and a cancel, answer as a peek would)
--   plan    the plan in force, "" when there is none
--   limit   the effective limit, -1 unlimited, 0 when no plan applies
--   used    the month's total after a charge that counted, before otherwise
--
-- Numbers: Lua numbers are doubles, exact below 2^53; every count here is
-- kept below 10^15, and numbers go back to Redis formatted with %d
-- (a bare Lua number would print as 1e+15).

local function int(s)
  -- An optional '-' and 1 to 15 digits: exact as a double. That is
  -- QM_COUNT_DIGITS (conf/conf.h): the conf and the ctl refuse larger counts.
  local digits = type(s) == 'string' and string.match(s, '^%-?(%d+)$')
  if not digits or #digits > 15 then
    return nil
  end
  return tonumber(s)
end

local function str(n)
  return string.format('%d', n)
end

local op, units, category = ARGV[1], int(ARGV[2]), ARGV[3]
local monitor, expireat, month, account = ARGV[4] == '1', int(ARGV[5]), ARGV[6], ARGV[7]
local refused_extra, replay_id = int(ARGV[8]), ARGV[9]
local default_plan, percents = ARGV[10], ARGV[11]

local journaled = op == 'replay' or op == 'cancel'
if (op ~= 'peek' and op ~= 'charge' and op ~= 'refused' and not journaled)
    or #KEYS ~= 5 or #ARGV < 11 or (#ARGV - 11) % 2 ~= 0
    or units == nil or units < 0 or refused_extra == nil or refused_extra < 0
    or expireat == nil or journaled ~= (replay_id ~= '')
    or (op == 'cancel' and not string.match(replay_id, '^%x+$')) then
  return redis.error_reply('ERR quota.lua: bad arguments')
end

-- The account and usage hashes are read (HMGET) before anything is
-- written, and a key of another type fails that read. The warned hash and
-- the stream are only written, after the usage: their types are checked
-- first, by the ops that may write them.
if op == 'charge' or op == 'refused' or op == 'replay' then
  local want = {[3] = 'hash', [4] = 'stream'}
  for i = 3, 4 do
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'none' and t ~= want[i] then
      return redis.error_reply('WRONGTYPE quota.lua: ' .. KEYS[i] .. ' is a ' .. t
        .. ', not a ' .. want[i])
    end
  end
end

-- The plan, the limit, and any reason to refuse other than the quota.
local plans = {}
for i = 12, #ARGV, 2 do
  plans[ARGV[i]] = int(ARGV[i + 1])
end
local acct = redis.call('HMGET', KEYS[1], 'plan', 'limit', 'suspended')
local plan = acct[1]
if not plan or plan == '' then
  plan = default_plan
end
local monthly = plans[plan]
local override = int(acct[2])
if override ~= nil and override < -1 then
  override = nil
end
local limit = override or monthly or 0

local status = nil
if acct[3] == '1' then
  status = 'suspended'
elseif plan == '' then
  status = 'no_plan'
elseif monthly == nil then
  status = 'unknown_plan'
elseif monthly == 0 and override == nil then
  status = 'no_mail'
end

-- The month's usage; anything not an integer would stop HINCRBY half way.
local fields = {'total', 'messages', 'refused', 'would_refuse'}
if category ~= '' then
  fields[5] = category
end
local usage = redis.call('HMGET', KEYS[2], unpack(fields))
for i = 1, #fields do
  if usage[i] and int(usage[i]) == nil then
    return redis.error_reply('ERR quota.lua: ' .. KEYS[2] .. ' field ' .. fields[i]
      .. ' is not an integer')
  end
end
local used = int(usage[1]) or 0

local function quota_status()
  if status then
    return status
  end
  if limit == -1 or used < limit then
    return 'ok'
  end
  return 'exhausted'
end

local function add(field, n)
  return redis.call('HINCRBY', KEYS[2], field, str(n))
end

-- The "exhausted" event: once per account and month, when quota refuses mail.
local function exhausted(now_used)
  if redis.call('HSETNX', KEYS[3], 'exhausted', '1') == 1 then
    redis.call('EXPIREAT', KEYS[3], str(expireat))
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'type', 'exhausted',
      'account', account, 'month', month, 'used', str(now_used), 'limit', str(limit), 'plan', plan)
  end
end

if op == 'peek' then
  return {quota_status(), plan, limit, used}
end

if op == 'refused' then
  if units > 0 then
    add('refused', units)
    redis.call('EXPIREAT', KEYS[2], str(expireat))
    if status == nil and limit ~= -1 then
      exhausted(used)
    end
  end
  return {quota_status(), plan, limit, used}
end

-- How long a charge's outcome is kept under its id: far longer than any
-- request waits in a connection's buffer, and than a milter restart or a
-- Redis restart takes, so that a cancel still finds what to take back.
local CHARGE_TTL = '600000'
local charge_id = string.match(replay_id, '^%x+$') and #replay_id == 16

if op == 'cancel' then
  local done = redis.call('GET', KEYS[5])
  if done == 'ok' or done == 'over' or done == 'replayed' or done == 'replayed-over' then
    -- It ran and counted: take it back, never below zero.
    local back = {total = units, messages = 1}
    if category ~= '' then
      back[category] = units
    end
    if done == 'over' or done == 'replayed-over' then
      back.would_refuse = units
    end
    for field, n in pairs(back) do
      if add(field, -n) < 0 then
        redis.call('HSET', KEYS[2], field, '0')
      end
    end
    used = math.max(used - units, 0)
  end
  -- Not found: it never ran, or its outcome expired; either way nothing
  -- more can be taken back, and nothing is recorded (a cancel applied
  -- again after the outcome expired must not count anything twice).
  redis.call('SET', KEYS[5], 'cancelled', 'PX', CHARGE_TTL)
  return {quota_status(), plan, limit, used}
end

if op == 'replay' then
  -- The entry of a charge that failed in doubt, and did run: counted already.
  if redis.call('EXISTS', KEYS[5]) == 1 then
    return {quota_status(), plan, limit, used}
  end
  if redis.call('HSETNX', KEYS[3], 'replay:' .. replay_id, '1') == 0 then
    return {quota_status(), plan, limit, used}
  end
  redis.call('EXPIREAT', KEYS[3], str(expireat))
  monitor = true
end

-- charge (and replay). A charge is sent twice only when its connection
-- ended before the reply (Redis ran it, then dropped its clients): the
-- outcome kept under the charge's id answers the second run, uncounted.
-- A charge that finds its id "cancelled" or "replayed" came late, after
-- the milter gave up on it: it counts nothing, and nobody reads its reply.
if op == 'charge' then
  local done = redis.call('GET', KEYS[5])
  if done then
    return {done, plan, limit, used}
  end
end
-- The outcome under the charge's id. A replayed charge's: the charge
-- itself may still be on its way, and must find it; a cancel that comes
-- after must know what to take back.
local charge_key = (op == 'charge' or (op == 'replay' and charge_id)) and KEYS[5] or nil
local function charged(outcome)
  if charge_key then
    local kept = outcome
    if op == 'replay' then
      kept = outcome == 'ok' and 'replayed' or 'replayed-over'
    end
    redis.call('SET', charge_key, kept, 'PX', CHARGE_TTL)
  end
  return outcome
end

local fits = status == nil and (limit == -1 or used + units <= limit)
if not fits and not monitor then
  -- The message's own units are not recorded as refused here: the milter
  -- does it (op "refused") once it knows its reply is final, a 5xx, so
  -- that a 451 and the client's retry are not recorded twice.
  if refused_extra > 0 then
    add('refused', refused_extra)
    redis.call('EXPIREAT', KEYS[2], str(expireat))
  end
  if status == nil then
    exhausted(used)
    status = 'exhausted'
  end
  return {charged(status), plan, limit, used}
end

local total = add('total', units)
add('messages', 1)
if category ~= '' then
  add(category, units)
end
if refused_extra > 0 then
  add('refused', refused_extra)
end
if not fits then
  add('would_refuse', units)
end
redis.call('EXPIREAT', KEYS[2], str(expireat))
if refused_extra > 0 and status == nil and limit ~= -1 then
  exhausted(total)
end

-- Thresholds: each percent once per account and month, however many race.
local tlimit = limit
if status == 'no_plan' or status == 'unknown_plan' then
  tlimit = -1
end
if tlimit > 0 then
  local warned = false
  -- ceil(tlimit * p / 100), though tlimit * p may pass 2^53 (inexact):
  -- hundreds and the rest apart. What still passes 2^53 is far above
  -- any total (< 10^15), whatever its rounding.
  local rest = tlimit % 100
  local hundreds = (tlimit - rest) / 100
  for p in string.gmatch(percents, '%d+') do
    local threshold = hundreds * tonumber(p) + math.floor((rest * tonumber(p) + 99) / 100)
    if total >= threshold and redis.call('HSETNX', KEYS[3], p, '1') == 1 then
      warned = true
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'type', 'threshold',
        'account', account, 'month', month, 'percent', p, 'used', str(total),
        'limit', str(tlimit), 'plan', plan)
    end
  end
  if warned then
    redis.call('EXPIREAT', KEYS[3], str(expireat))
  end
end

if fits then
  return {charged('ok'), plan, limit, total}
end
return {charged('over'), plan, limit, total}
