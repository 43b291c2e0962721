-- quota.lua - quota-milter's one atomic accounting step
--
-- Run with EVALSHA by counters.c; Redis runs a script alone, so the check
-- and the increment below cannot interleave with another milter's. Every
-- key is checked before the first write, so a bad key makes the script
-- fail without having written anything.
--
-- KEYS[1]  account hash  PREFIXaccount:{A}      plan, limit, limit_daily,
--                                               limit_hourly, suspended
-- KEYS[2]  usage hash    PREFIXusage:{A}:M      total, messages, CATEGORY,
--                                               refused, would_refuse, and the
--                                               plan and limit of its last write
-- KEYS[3]  warned hash   PREFIXwarned:{A}:M     percents announced, "exhausted",
--                                               "replay:ID" of journal entries
--                                               applied, "reset" (ms of the last)
-- KEYS[4]  events stream PREFIXevents
-- KEYS[5]  charge string PREFIXcharge:{A}:ID     an outcome, 10 minutes
-- KEYS[6]  day hash      PREFIXusage:{A}:YYYY-MM-DD     total, messages, CATEGORY,
-- KEYS[7]  hour hash     PREFIXusage:{A}:YYYY-MM-DDTHH  would_refuse, limit (the
--                                               cap of its last write), "cap"
--                                               (its cap event was sent)
--          KEYS[6] and KEYS[7] are given to peek and charge always, to
--          replay and cancel when the entry names its hour, never to
--          refused and reset (5 keys). A window is touched only when its
--          name is given in ARGV and its cap is not -1 (cancel: when the
--          charge counted in it).
--
-- ARGV[1]  op: "peek" (writes nothing), "charge", "refused", "replay",
--          "cancel", "reset"
-- ARGV[2]  units, integer >= 0
-- ARGV[3]  category field of the usage hashes, "" for none
-- ARGV[4]  mode: "0" enforce (refuses what does not fit), "1" monitor
--          (counts it, status "over"; would_refuse gets the units enforce
--          would have refused: the whole message), "2" monitor of a
--          message enforce decides recipient by recipient (would_refuse
--          gets only the units beyond the tightest of month and windows)
-- ARGV[5]  expireat: unix time at which the usage and warned hashes go
-- ARGV[6]  month "YYYY-MM" (for events)
-- ARGV[7]  account (for events)
-- ARGV[8]  refused units a journal entry of an older version carries, or 0
-- ARGV[9]  id: the refusal's (refused), the journal entry's (replay,
--          cancel); "" for the other ops
-- ARGV[10] day window "YYYY-MM-DD" of KEYS[6] (for events), "" not to
--          touch it (without KEYS[6], or a window gone: replay, cancel)
-- ARGV[11] unix time at which the day hash goes (its end + 3600), 0 without
-- ARGV[12] hour window "YYYY-MM-DDTHH" of KEYS[7], "" as ARGV[10]
-- ARGV[13] unix time at which the hour hash goes, 0 without
-- ARGV[14] default plan for accounts without one, "" for none
-- ARGV[15] warn percents, "80,100", "" for none
-- ARGV[16], ARGV[17], ...  the plan table: name, monthly, daily, hourly
--          (-1 unlimited, no cap)
-- (ARGV[14] on only change with the conf: counters.c encodes them once.)
--
-- Caps: an account's daily and hourly caps are its limit_daily and
-- limit_hourly (-1 none) if valid, else its plan's. A message fits if it
-- fits the month and every capped window; enforce refuses in this order:
-- the month ("exhausted"), the day ("daily_cap"), the hour ("hourly_cap"),
-- writing nothing but events. What fits is added to the month and to
-- every capped window. In monitor mode what does not fit is counted all
-- the same, and would_refuse gets it in the month and in each window that
-- did not fit.
--
-- "refused" records units refused for good (a 5xx) in their month.
-- "replay" applies a journaled count as a monitor charge, to the month and
-- to the capped windows of the entry's hour. "cancel" takes back the
-- charge of id ARGV[9] if it ran and counted, from the month and from the
-- windows it counted in (never below zero), and marks its charge key
-- "cancelled" so that it counts nothing if it runs later; not from the
-- month across a reset ("reset" in the warned hash). "reset"
-- (quota-milter-ctl) deletes the month's usage and announced thresholds.
-- Each acts once per id: the outcome stays 10 minutes in the charge key,
-- and a replay's "replay:ID" in the warned hash while the month lives. A
-- replay of a charge id settles that charge too: if it ran and counted,
-- the replay counts nothing; if not, it never will.
--
-- Thresholds: each percent of the limit is announced once per account and
-- month, by the first charge, refusal or replay that finds the month's
-- total at or above it, whatever the limit was when the total got there.
-- Caps: an event "cap" once per account and window (the field "cap" of
-- the window's hash), by the charge that makes the window's total reach
-- its cap, or that the cap refuses.
--
-- Returns {status, plan, limit, used, day_cap, day_used, hour_cap, hour_used}:
--   status  ok, over, exhausted, daily_cap, hourly_cap, no_mail, suspended,
--           no_plan, unknown_plan (a replay already applied, and a cancel,
--           answer as a peek would)
--   plan    the plan in force, "" when there is none
--   limit   the effective limit, -1 unlimited, 0 when no plan applies
--   used    the month's total after a charge that counted, before otherwise;
--           reset: 1 when there was a usage hash to delete, else 0
--   day_cap, hour_cap    the effective caps, -1 for none (and for the ops
--           refused, cancel and reset, and a replay without windows)
--   day_used, hour_used  the windows' totals as used is the month's; 0
--           when the cap is -1
--
-- Commands: a charge that fits runs 10 commands for an account without
-- caps (and a category), plus 2 per capped window (HMGET, HSET); more
-- only when a hash is made (EXPIREAT, HSET plan), a threshold or a cap
-- is reached.
--
-- Errors: every error this script raises itself starts with the code
-- "QUOTA": the arguments or the keys are such that running it again can
-- never succeed. Any other error (LOADING, BUSY, READONLY, ...) may pass.
--
-- Numbers: Lua numbers are doubles, exact below 2^53; every count here is
-- kept below 10^15 (QM_COUNT_MAX), and numbers go back to Redis formatted
-- with %d (a bare Lua number would print as 1e+15).

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

local function refuse(text)
  return redis.error_reply('QUOTA quota.lua: ' .. text)
end

local op, units, category = ARGV[1], int(ARGV[2]), ARGV[3]
local mode, expireat, month, account = ARGV[4], int(ARGV[5]), ARGV[6], ARGV[7]
local refused_extra, id = int(ARGV[8]), ARGV[9]
local default_plan, percents = ARGV[14], ARGV[15]
local monitor = mode == '1' or mode == '2'

-- The windows. letter: how the outcome of a charge names one it counted
-- in (upper case: and put units in its would_refuse).
local windowed = #KEYS == 7
local windows = {
  {key = KEYS[6], name = ARGV[10], expireat = int(ARGV[11]), kind = 'daily',
   status = 'daily_cap', letter = 'd', cap = -1, used = 0},
  {key = KEYS[7], name = ARGV[12], expireat = int(ARGV[13]), kind = 'hourly',
   status = 'hourly_cap', letter = 'h', cap = -1, used = 0},
}

local known = {peek = false, charge = false, reset = false,
  refused = true, replay = true, cancel = true}
-- Ops that are given the windows: always, maybe, never.
local needs_windows = {peek = true, charge = true, refused = false, reset = false}
-- A charge id: 16 lower-case hex digits, as keys_charge_id_valid() (keys.c).
local hex_id = #(id or '') == 16 and not string.find(id, '[^0-9a-f]')
if known[op] == nil or (#KEYS ~= 5 and #KEYS ~= 7) or #ARGV < 15 or (#ARGV - 15) % 4 ~= 0
    or units == nil or units < 0 or refused_extra == nil or refused_extra < 0
    or expireat == nil or (mode ~= '0' and not monitor)
    or known[op] ~= (id ~= '') or ((op == 'cancel' or op == 'refused') and not hex_id)
    or (needs_windows[op] ~= nil and needs_windows[op] ~= windowed)
    or windows[1].expireat == nil or windows[2].expireat == nil
    or (not windowed and (windows[1].name ~= '' or windows[2].name ~= ''))
    or (needs_windows[op] and (windows[1].name == '' or windows[2].name == '')) then
  return refuse('bad arguments')
end

-- Each key must be of its type or absent: a key of another type would
-- make a command below fail, half way or with another error code. A peek
-- writes nothing; a charge reads its first two keys, its windows and its
-- charge key before writing, and a live call's error code matters to
-- nobody (the journal's ops, which are set aside by it, check them all).
local want = {'hash', 'hash', 'hash', 'stream', 'string', 'hash', 'hash'}
local first = {peek = 8, charge = 3}
local last = {charge = 4}
for i = first[op] or 1, last[op] or #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want[i] then
    return refuse(KEYS[i] .. ' is a ' .. t .. ', not a ' .. want[i])
  end
end

-- The time on Redis's clock, in ms; for cancel and reset only.
local function now_ms()
  if redis.replicate_commands then
    redis.replicate_commands()
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if op == 'reset' then
  local at = now_ms()
  local had = redis.call('DEL', KEYS[2])
  local fields = redis.call('HKEYS', KEYS[3])
  local kept = 0
  for i = 1, #fields do
    if string.sub(fields[i], 1, 7) ~= 'replay:' then
      redis.call('HDEL', KEYS[3], fields[i])
    else
      kept = kept + 1
    end
  end
  redis.call('HSET', KEYS[3], 'reset', str(at))
  if kept == 0 then
    -- Made here (none before, or its last field just went): it goes
    -- with the month's usage.
    redis.call('EXPIREAT', KEYS[3], str(expireat))
  end
  return {'ok', '', 0, had, -1, 0, -1, 0}
end

-- The plan, the limit, the caps, and any reason to refuse other than
-- the quota. An override is an integer from -1 up, else ignored.
local plans = {}
for i = 16, #ARGV, 4 do
  plans[ARGV[i]] = {int(ARGV[i + 1]), int(ARGV[i + 2]), int(ARGV[i + 3])}
end
local function override_of(text)
  local n = int(text)
  if n ~= nil and n < -1 then
    return nil
  end
  return n
end
local acct = redis.call('HMGET', KEYS[1], 'plan', 'limit', 'suspended', 'limit_daily',
  'limit_hourly')
local plan = acct[1]
if not plan or plan == '' then
  plan = default_plan
end
local row = plans[plan] or {}
local monthly = row[1]
local override = override_of(acct[2])
local limit = override or monthly or 0
for i = 1, 2 do
  windows[i].cap = override_of(acct[3 + i]) or row[1 + i] or -1
end

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
local usage = redis.call('HMGET', KEYS[2], 'plan', 'limit', unpack(fields))
for i = 1, #fields do
  if usage[i + 2] and int(usage[i + 2]) == nil then
    return refuse(KEYS[2] .. ' field ' .. fields[i] .. ' is not an integer')
  end
end
local used = int(usage[3]) or 0

-- A window's hash, read before any write (a key of another type fails
-- here): w.got = {limit, cap, total, messages, would_refuse, CATEGORY}.
-- nil, or the error to return.
local wfields = {'total', 'messages', 'would_refuse'}
if category ~= '' then
  wfields[4] = category
end
local function read_window(w)
  w.got = redis.call('HMGET', w.key, 'limit', 'cap', unpack(wfields))
  for i = 1, #wfields do
    if w.got[i + 2] and int(w.got[i + 2]) == nil then
      return refuse(w.key .. ' field ' .. wfields[i] .. ' is not an integer')
    end
  end
  w.used = int(w.got[3]) or 0
  return nil
end

-- The capped windows this call counts in (peek, charge, replay).
local live = {}
if windowed and (op == 'peek' or op == 'charge' or op == 'replay') then
  for i = 1, 2 do
    if windows[i].cap ~= -1 and windows[i].name ~= '' then
      local failed = read_window(windows[i])
      if failed then
        return failed
      end
      live[#live + 1] = windows[i]
    end
  end
end
for i = 1, 2 do
  if not windows[i].got or windows[i].cap == -1 then
    windows[i].cap, windows[i].used = -1, 0
  end
end

local function quota_status()
  if status then
    return status
  end
  if limit ~= -1 and used >= limit then
    return 'exhausted'
  end
  for _, w in ipairs(live) do
    if w.used >= w.cap then
      return w.status
    end
  end
  return 'ok'
end

local function reply(outcome, total)
  local r = {outcome, plan, limit, total}
  for _, w in ipairs(windows) do
    r[#r + 1] = w.cap
    r[#r + 1] = w.cap == -1 and 0 or w.used
  end
  return r
end

if op == 'peek' then
  return reply(quota_status(), used)
end

local function add(field, n)
  return redis.call('HINCRBY', KEYS[2], field, str(n))
end

-- After a write to the month's usage: its expiry, and the plan and limit
-- in force, which the billing export of the month shows.
local function written()
  if status ~= 'no_plan' and status ~= 'unknown_plan'
      and (usage[1] ~= plan or usage[2] ~= str(limit)) then
    redis.call('HSET', KEYS[2], 'plan', plan, 'limit', str(limit))
    usage[1], usage[2] = plan, str(limit)
  end
  redis.call('EXPIREAT', KEYS[2], str(expireat))
end

local function event(kind, ...)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'type', kind,
    'account', account, 'month', month, ...)
end

-- Every threshold the month's total has reached and not yet announced:
-- each percent once per account and month, however many race. Also
-- after a refusal: a limit lowered below the usage announces them too.
local function announce(total)
  if status == 'no_plan' or status == 'unknown_plan' or limit <= 0 then
    return
  end
  local warned = false
  -- ceil(limit * p / 100), though limit * p may pass 2^53 (inexact):
  -- hundreds and the rest apart. What still passes 2^53 is far above
  -- any total (< 10^15), whatever its rounding.
  local rest = limit % 100
  local hundreds = (limit - rest) / 100
  for p in string.gmatch(percents, '%d+') do
    local threshold = hundreds * tonumber(p) + math.floor((rest * tonumber(p) + 99) / 100)
    if total >= threshold and redis.call('HSETNX', KEYS[3], p, '1') == 1 then
      warned = true
      event('threshold', 'percent', p, 'used', str(total), 'limit', str(limit), 'plan', plan)
    end
  end
  if warned then
    redis.call('EXPIREAT', KEYS[3], str(expireat))
  end
end

-- The "exhausted" event: once per account and month, when quota refuses mail.
local function exhausted(now_used)
  if status == nil and limit ~= -1
      and redis.call('HSETNX', KEYS[3], 'exhausted', '1') == 1 then
    redis.call('EXPIREAT', KEYS[3], str(expireat))
    event('exhausted', 'used', str(now_used), 'limit', str(limit), 'plan', plan)
  end
end

-- A window's expiry, set when its hash is made (it had no "limit"),
-- after its last write.
local function window_made(w)
  if not w.got[1] and not w.expiring then
    redis.call('EXPIREAT', w.key, str(w.expireat))
    w.expiring = true
  end
end

-- The "cap" event: once per account and window, when its cap is reached
-- or refuses mail. Its field "cap" was read with the window. True when
-- sent (the hash was written).
local function cap_reached(w)
  if not w.got[2] and redis.call('HSETNX', w.key, 'cap', '1') == 1 then
    w.got[2] = '1'
    event('cap', 'window', w.name, 'kind', w.kind, 'used', str(w.used), 'limit', str(w.cap),
      'plan', plan)
    return true
  end
  return false
end

-- How long an outcome is kept under its id: far longer than any request
-- waits in a connection's buffer, and than a milter restart or a Redis
-- restart takes, so that a cancel still finds what to take back.
local CHARGE_TTL = 600000

-- The outcomes of a charge that counted (a replayed one's too).
local counted = {ok = true, over = true, replayed = true, ['replayed-over'] = true}

-- An outcome as kept under its id: STATUS, then ":N" for a charge that
-- put only N of its units in would_refuse (mode "2"), then ";" and the
-- letters of the windows it counted in (d, h; upper case: it put units in
-- the window's would_refuse). nil when none.
local function outcome_of(kept)
  if not kept then
    return nil, nil, ''
  end
  local status, n, letters = string.match(kept, '^([%a_-]+):?(%d*);?([dDhH]*)$')
  return status, tonumber(n), letters or ''
end

if op == 'refused' then
  if units > 0 and redis.call('SET', KEYS[5], 'refused', 'NX', 'PX', str(CHARGE_TTL)) then
    add('refused', units)
    written()
    exhausted(used)
    announce(used)
  end
  return reply(quota_status(), used)
end

if op == 'cancel' then
  local done, over_n, letters = outcome_of(redis.call('GET', KEYS[5]))
  -- The windows it counted in, read before any write.
  local back_from = {}
  if windowed and counted[done] then
    for _, w in ipairs(windows) do
      local upper = string.find(letters, string.upper(w.letter), 1, true)
      if w.name ~= '' and (upper or string.find(letters, w.letter, 1, true)) then
        local failed = read_window(w)
        if failed then
          return failed
        end
        w.over = upper ~= nil
        if w.got[1] or w.got[3] then
          back_from[#back_from + 1] = w
        end
      end
    end
  end
  local took = over_n or units
  -- A reset deletes the month's usage, not the windows'.
  local month_done = done
  local reset = int(redis.call('HGET', KEYS[3], 'reset'))
  if reset ~= nil and counted[done] then
    -- Ran at now - (CHARGE_TTL - the outcome's time to live).
    if now_ms() - CHARGE_TTL + redis.call('PTTL', KEYS[5]) <= reset then
      month_done = nil
    end
  end
  if counted[month_done] and redis.call('EXISTS', KEYS[2]) == 1 then
    -- It ran and counted: take it back, never below zero.
    local back = {total = units, messages = 1}
    if category ~= '' then
      back[category] = units
    end
    if done == 'over' or done == 'replayed-over' then
      back.would_refuse = took
    end
    for field, n in pairs(back) do
      if add(field, -n) < 0 then
        redis.call('HSET', KEYS[2], field, '0')
      end
    end
    redis.call('EXPIREAT', KEYS[2], str(expireat))
    used = math.max(used - units, 0)
  end
  for _, w in ipairs(back_from) do
    -- got: limit, cap, total, messages, would_refuse, CATEGORY
    local set = {'total', str(math.max(w.used - units, 0)),
      'messages', str(math.max((int(w.got[4]) or 0) - 1, 0))}
    if category ~= '' then
      set[5], set[6] = category, str(math.max((int(w.got[6]) or 0) - units, 0))
    end
    if w.over then
      set[#set + 1], set[#set + 2] = 'would_refuse', str(math.max((int(w.got[5]) or 0) - took, 0))
    end
    redis.call('HSET', w.key, unpack(set))
  end
  -- Not found: it never ran, or its outcome expired; either way nothing
  -- more can be taken back (a cancel applied again after the outcome
  -- expired must not count anything twice).
  redis.call('SET', KEYS[5], 'cancelled', 'PX', str(CHARGE_TTL))
  return reply(quota_status(), used)
end

if op == 'replay' then
  if hex_id then
    -- The entry of a charge that failed in doubt: if it ran and counted,
    -- done; if it ran and counted nothing (exhausted, ...), the message
    -- was accepted all the same, and counts now; its refusals it recorded.
    -- Cancelled: the milter died before its verdict (inflight), so the
    -- message was not accepted after all; settled for good.
    local done = outcome_of(redis.call('GET', KEYS[5]))
    if counted[done] then
      return reply(quota_status(), used)
    end
    if done == 'cancelled' then
      if redis.call('HSETNX', KEYS[3], 'replay:' .. id, '1') == 1 then
        redis.call('EXPIREAT', KEYS[3], str(expireat))
      end
      return reply(quota_status(), used)
    end
    if done then
      refused_extra = 0
    end
  end
  if redis.call('HSETNX', KEYS[3], 'replay:' .. id, '1') == 0 then
    return reply(quota_status(), used)
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
  local done = outcome_of(redis.call('GET', KEYS[5]))
  if done then
    return reply(done, used)
  end
end
-- The outcome under the charge's id. A replayed charge's: the charge
-- itself may still be on its way, and must find it; a cancel that comes
-- after must know what to take back.
local charge_key = (op == 'charge' or (op == 'replay' and hex_id)) and KEYS[5] or nil
local function charged(outcome, over, letters)
  if charge_key then
    local kept = outcome
    if op == 'replay' then
      kept = outcome == 'ok' and 'replayed' or 'replayed-over'
    elseif over and over < units then
      kept = outcome .. ':' .. str(over)
    end
    if letters and letters ~= '' then
      kept = kept .. ';' .. letters
    end
    redis.call('SET', charge_key, kept, 'PX', str(CHARGE_TTL))
  end
  return outcome
end

-- The first of month, day and hour the units do not fit, in that order;
-- each window that they do not fit is marked.
local failing = nil
if status == nil then
  if limit ~= -1 and used + units > limit then
    failing = 'month'
  end
  for _, w in ipairs(live) do
    if w.used + units > w.cap then
      w.over = true
      failing = failing or w
    end
  end
end
local fits = status == nil and failing == nil
if not fits and not monitor then
  -- The message's own units are not recorded as refused here: the milter
  -- does it (op "refused") once it knows its reply is final, a 5xx, so
  -- that a 451 and the client's retry are not recorded twice.
  if refused_extra > 0 then
    add('refused', refused_extra)
    written()
  end
  if failing == 'month' then
    exhausted(used)
    status = 'exhausted'
  elseif failing then
    if cap_reached(failing) then
      window_made(failing)
    end
    status = failing.status
  end
  announce(used)
  return reply(charged(status), used)
end

-- What enforce would have refused: the whole message, or, recipient by
-- recipient, the units beyond the tightest of month and windows.
local over = 0
if not fits then
  over = units
  if mode == '2' and status == nil then
    local room = limit ~= -1 and limit - used or nil
    for _, w in ipairs(live) do
      if room == nil or w.cap - w.used < room then
        room = w.cap - w.used
      end
    end
    over = units - math.max(room, 0)
  end
end

local total = add('total', units)
add('messages', 1)
if category ~= '' then
  add(category, units)
end
if refused_extra > 0 then
  add('refused', refused_extra)
end
if over > 0 then
  add('would_refuse', over)
end
written()
if refused_extra > 0 then
  exhausted(total)
end
announce(total)

-- The windows: one HSET each, of the values read above plus this charge.
-- got: limit, cap, total, messages, would_refuse, CATEGORY
local letters = ''
for _, w in ipairs(live) do
  w.used = w.used + units
  local set = {'total', str(w.used), 'messages', str((int(w.got[4]) or 0) + 1),
    'limit', str(w.cap)}
  if category ~= '' then
    set[7], set[8] = category, str((int(w.got[6]) or 0) + units)
  end
  local letter = w.letter
  if over > 0 and w.over then
    set[#set + 1], set[#set + 2] = 'would_refuse', str((int(w.got[5]) or 0) + over)
    letter = string.upper(letter)
  end
  redis.call('HSET', w.key, unpack(set))
  if w.used >= w.cap then
    cap_reached(w)
  end
  window_made(w)
  letters = letters .. letter
end

if over == 0 then
  return reply(charged('ok', nil, letters), total)
end
return reply(charged('over', over, letters), total)
