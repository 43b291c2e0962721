-- caps.lua - hourly and daily caps through the real milter
-- (t_milter_caps.sh). The milter's clock is libfaketime's, read from the
-- file -D clock; -D day is its day ("2027-03-10"), -D fmonth its month,
-- -D nextday the day after; the hours 13 and 14
-- of it are the windows used. -D phase: rcpt (sender-domain accounts,
-- decided at RCPT), eom (header accounts, decided at end of message),
-- monitor (sender-domain accounts, monitor mode), hang (header accounts,
-- Redis stopped during a charge: -D rpid its pid).
dofile(lib)
month = fmonth		-- the month of the fake clock, for usage() and uncounted()

-- set_clock - what the milter's time() says from now on (libfaketime)
local function set_clock(text)
	local f = assert(io.open(clock, "w"))
	f:write(text .. "\n")
	f:close()
end

-- win - a field of an account's usage hash of a window ("13", "14": an
-- hour of the day; "day": the day)
local function win(acct, w, field)
	local name = w == "day" and day or day .. "T" .. w
	return redis("HGET 'qm:usage:{" .. acct .. "}:" .. name .. "' " .. field)
end

-- exists - does the key exist?
local function exists(key)
	return redis("EXISTS '" .. key .. "'") == "1"
end

-- rcpts - n recipients
local function rcpts(n)
	local list = {}
	for i = 1, n do list[i] = "<r" .. i .. "@x.example>" end
	return list
end

-- count_accepted - how many replies of a list let the recipient through
local function count_accepted(replies)
	local n = 0
	for _, r in ipairs(replies) do
		if accepted(r) then n = n + 1 end
	end
	return n
end

-- send - one message from crm@DOMAIN to n recipients; the RCPT replies
-- and the end-of-message reply (nil when no recipient was accepted)
local function send(domain, n)
	local conn = open()
	local r = envelope(conn, "<crm@" .. domain .. ">", rcpts(n))
	local e = nil
	if count_accepted(r) > 0 then e = content(conn, {}) end
	mt.disconnect(conn)
	return r, e
end

-- cap_events - how many "cap" events of an account in qm:events
local function cap_events(acct)
	local ev = redis("XRANGE qm:events - +")
	local n = 0
	for _ in ev:gmatch("\ncap\naccount\n" .. acct:gsub("%.", "%%.") .. "\n") do n = n + 1 end
	return n
end

local cases = {}

cases.rcpt = {
{ "an hourly cap of 3: three recipients fit, the fourth gets the cap's 451", function()
	-- hour.example: plan capped (monthly 100, daily 10, hourly 3).
	local r, e = send("hour.example", 4)
	check(accepted(r[1]) and accepted(r[2]) and accepted(r[3]), "rcpt: recipients 1-3 accepted")
	check(r[4] == SMFIR_REPLYCODE, "rcpt: the 4th refused at RCPT")
	check(accepted(e), "rcpt: the message of 3 accepted")
	check(usage("hour.example", "total") == "3", "rcpt: the month counts 3")
	check(win("hour.example", "13", "total") == "3", "rcpt: the hour's hash counts 3")
	check(win("hour.example", "day", "total") == "3", "rcpt: the day's hash counts 3")
	check(usage("hour.example", "refused") == "", "rcpt: a cap's 451 is not recorded as refused")
	r = send("hour.example", 1)
	check(r[1] == SMFIR_REPLYCODE, "rcpt: the next message in the hour is refused too")
	check(win("hour.example", "13", "total") == "3", "rcpt: the hour still counts 3")
end },
{ "the next hour reopens the window", function()
	set_clock(day .. " 14:00:05")
	local r, e = send("hour.example", 1)
	check(accepted(r[1]) and accepted(e), "rcpt: at 14:00 one more is accepted")
	check(win("hour.example", "14", "total") == "1", "rcpt: counted in the new hour")
	check(win("hour.example", "13", "total") == "3", "rcpt: the past hour keeps its 3")
	check(win("hour.example", "day", "total") == "4", "rcpt: the day counts 4")
	local ttl = tonumber(redis("TTL 'qm:usage:{hour.example}:" .. day .. "T14'"))
	check(ttl ~= nil and ttl > 0, "rcpt: the hour's hash expires")
	set_clock(day .. " 13:59:50")
end },
{ "the monthly quota reached first still refuses for good", function()
	-- month.example: limit 2, 1 used this month; hourly cap 3, none used.
	local r, e = send("month.example", 2)
	check(accepted(r[1]) and r[2] == SMFIR_REPLYCODE, "rcpt: one fits the month, one refused")
	check(accepted(e), "rcpt: the message of one accepted")
	check(usage("month.example", "refused") == "1", "rcpt: the month's 550 is recorded as refused")
end },
{ "overrides: limit_hourly -1 lifts the plan's hourly cap, limit_daily 2 binds", function()
	-- lift.example: limit_hourly -1; daily 10 of the plan stays.
	local r = send("lift.example", 5)
	check(count_accepted(r) == 5, "rcpt: 5 recipients accepted without the hourly cap")
	check(not exists("qm:usage:{lift.example}:" .. day .. "T13"), "rcpt: no hour hash without a cap")
	check(win("lift.example", "day", "total") == "5", "rcpt: the day counts 5")
	-- daily.example: limit_daily 2, below the plan's hourly 3.
	r = send("daily.example", 3)
	check(accepted(r[1]) and accepted(r[2]) and r[3] == SMFIR_REPLYCODE,
		"rcpt: limit_daily 2: two fit, the third refused")
	check(win("daily.example", "day", "total") == "2", "rcpt: the day counts 2")
end },
{ "a cap of 0 sends nothing in its window", function()
	-- zero.example: limit_hourly 0.
	local r = send("zero.example", 1)
	check(r[1] == SMFIR_REPLYCODE, "rcpt: limit_hourly 0 refuses the first recipient")
	check(uncounted("zero.example"), "rcpt: nothing counted")
	check(usage("zero.example", "refused") == "", "rcpt: nor recorded as refused")
end },
{ "a reached cap is announced once per account and window", function()
	check(cap_events("hour.example") == 1, "rcpt: one cap event for hour.example's hour")
	local ev = redis("XRANGE qm:events - +")
	check(ev:find(day .. "T13", 1, true) ~= nil, "rcpt: the event names the window")
	check(cap_events("lift.example") == 0, "rcpt: none for an account under its caps")
end },
}

cases.eom = {
{ "end of message: over the hourly cap, 451 4.7.1 with the window's numbers", function()
	-- acme: plan capped (hourly 3), header account, decided at end of data.
	for i = 1, 3 do
		local conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("acme"))
		check(accepted(e), "eom: message " .. i .. " of 3 accepted")
		mt.disconnect(conn)
	end
	local conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("acme"))
	check(refused(conn, e, "451", "4.7.1",
		"Hourly sending limit of 3 emails reached for account acme, try again after 14:00 UTC"),
		"eom: the 4th gets 451 4.7.1 naming the cap and when it reopens")
	mt.disconnect(conn)
	check(usage("acme", "total") == "3", "eom: the month counts 3")
	check(win("acme", "13", "total") == "3", "eom: the hour counts 3")
	check(usage("acme", "refused") == "", "eom: a cap's 451 is not recorded as refused")
end },
{ "end of message: a message of 2 where 1 fits is refused whole", function()
	-- duo: hourly 3, two messages of 1 sent first.
	for _ = 1, 2 do
		local conn = one("127.0.0.1", { "<a@x.example>" }, crm("duo"))
		mt.disconnect(conn)
	end
	local conn, e = one("127.0.0.1", { "<a@x.example>", "<b@x.example>" }, crm("duo"))
	check(e == SMFIR_REPLYCODE, "eom: 2 recipients, 1 left in the hour: refused")
	mt.disconnect(conn)
	check(win("duo", "13", "total") == "2", "eom: the hour keeps 2")
end },
{ "end of message: custom daily_cap text with $window $retry_after $used", function()
	-- dayco: limit_daily 1; the conf's reply daily_cap text is custom.
	local conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("dayco"))
	check(accepted(e), "eom: the day's one message accepted")
	mt.disconnect(conn)
	conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("dayco"))
	check(refused(conn, e, "451", "4.7.1",
		"dayco used 1 of 1 in " .. day .. ", retry after " .. nextday .. " 00:00 UTC"),
		"eom: the custom text names the window and the next day")
	mt.disconnect(conn)
end },
{ "end of message: the month still refuses with 550 before a cap", function()
	-- full: limit 1, 1 used this month; hourly 3.
	local conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("full"))
	check(refused(conn, e, "550", "5.7.1",
		"Monthly sending limit of 1 emails reached for account full (plan capped)"),
		"eom: the month's 550 5.7.1")
	mt.disconnect(conn)
end },
}

cases.monitor = {
{ "monitor mode counts past a cap and records would_refuse", function()
	-- mon.example: hourly 3 (plan capped), monitor mode.
	local r, e = send("mon.example", 5)
	check(count_accepted(r) == 5 and accepted(e), "monitor: 5 recipients accepted")
	check(usage("mon.example", "total") == "5", "monitor: the month counts 5")
	check(win("mon.example", "13", "total") == "5", "monitor: the hour counts 5")
	check(win("mon.example", "13", "would_refuse") == "2",
		"monitor: the hour's would_refuse: the 2 beyond the cap")
	check(usage("mon.example", "would_refuse") == "2", "monitor: the month's would_refuse too")
	check(usage("mon.example", "refused") == "", "monitor: nothing refused")
end },
}

cases.hang = {
{ "a Redis hang during a charge leaves every window exact", function()
	-- hang: hourly 3 (plan capped), header account.
	local conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("hang"))
	check(accepted(e), "hang: the first message accepted")
	mt.disconnect(conn)
	os.execute("kill -STOP " .. rpid)
	local good, err = pcall(function()
		conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("hang"))
		check(refused(conn, e, "451", "4.3.0", "Quota service temporarily unavailable"),
			"hang: Redis stopped during the charge: 451 4.3.0")
		mt.disconnect(conn)
	end)
	os.execute("kill -CONT " .. rpid)
	assert(good, err)
	-- Redis now runs the charge it had in its buffers; the milter's
	-- journal takes it back from the month and from both windows.
	os.execute("sleep 3")
	local total
	for _ = 1, 100 do
		total = win("hang", "13", "total")
		if total == "1" then break end
		os.execute("sleep 0.1")
	end
	check(total == "1", "hang: the hour counts 1 once the cancel is applied (" .. total .. ")")
	check(win("hang", "day", "total") == "1", "hang: the day counts 1")
	check(usage("hang", "total") == "1", "hang: the month counts 1")
	-- The hour has exactly 2 left: the next 2 fit, the third meets the cap.
	for i = 1, 3 do
		conn, e = one("127.0.0.1", { "<a@x.example>" }, crm("hang"))
		if i < 3 then
			check(accepted(e), "hang: message " .. i .. " of the 2 left accepted")
		else
			check(e == SMFIR_REPLYCODE, "hang: then the cap")
		end
		mt.disconnect(conn)
	end
end },
}

run(cases[phase])
