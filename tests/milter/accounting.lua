-- accounting.lua - what the usage hashes record, through the real milter
-- (t_milter_accounting.sh). Accounts are sender domains, decided at RCPT.
-- -D phase: month (the milter's clock under libfaketime, -D clock the
-- file it reads, -D m1 / m2 the months either side of midnight), monitor,
-- cut (Redis goes away between RCPT and end of message).
dofile(lib)

-- usage_in - a field of an account's usage hash in a given month
local function usage_in(acct, m, field)
	return redis("HGET 'qm:usage:{" .. acct .. "}:" .. m .. "' " .. field)
end

-- set_clock - what the milter's time() says from now on (libfaketime)
local function set_clock(text)
	local f = assert(io.open(clock, "w"))
	f:write(text .. "\n")
	f:close()
end

local cases = {}

cases.month = {
{ "RCPT refusals land in the month they were decided in", function()
	-- edge.example: limit 2, 1 used in m1. At 23:59:59 of m1's last day one
	-- recipient fits and one is refused; the data ends after midnight.
	local conn = open()
	local r = envelope(conn, "<crm@edge.example>", { "<a@x.example>", "<b@x.example>" })
	check(accepted(r[1]), "the first recipient fits m1")
	check(r[2] == SMFIR_REPLYCODE, "the second is refused in m1")
	set_clock(m2 .. "-01 00:00:01")
	local e = content(conn, {})
	check(accepted(e), "the message, ended in m2, is accepted")
	check(usage_in("edge.example", m1, "refused") == "1", "the refusal is recorded in m1")
	check(usage_in("edge.example", m2, "refused") == "", "and not in m2")
	check(usage_in("edge.example", m2, "total") == "1", "the message counts in m2, where it ended")
	local ev = redis("XRANGE qm:events - +")
	check(ev:find("exhausted\naccount\nedge.example\nmonth\n" .. m1 .. "\nused\n1\n", 1, true) ~= nil,
		"m1's exhausted event, with m1's usage")
	check(ev:find("month\n" .. m2, 1, true) == nil, "no event for m2")
	mt.disconnect(conn)
end },
}

cases.monitor = {
{ "monitor mode records what enforce would have refused", function()
	-- mon.example: limit 10, 8 used. Enforce accepts 2 of 5 recipients.
	local conn = open()
	local r = envelope(conn, "<crm@mon.example>",
		{ "<a@x.example>", "<b@x.example>", "<c@x.example>", "<d@x.example>", "<e@x.example>" })
	for i = 1, 5 do
		check(accepted(r[i]), "monitor: recipient " .. i .. " accepted")
	end
	check(accepted(content(conn, {})), "monitor: the message accepted")
	check(usage("mon.example", "total") == "13", "all 5 counted")
	check(usage("mon.example", "would_refuse") == "3", "would_refuse: the 3 enforce refuses, not 5")
	mt.disconnect(conn)
end },
}

cases.cut = {
{ "RCPT refusals of a message that then tempfails are kept", function()
	-- cut.example: limit 2, 1 used. One recipient fits, one is refused;
	-- Redis goes away before the end of the message.
	local conn = open()
	local r = envelope(conn, "<crm@cut.example>", { "<a@x.example>", "<b@x.example>" })
	check(accepted(r[1]) and r[2] == SMFIR_REPLYCODE, "one fits, one refused")
	redis("SHUTDOWN NOSAVE")
	local e = content(conn, {})
	check(refused(conn, e, "451", "4.3.0",
		"Quota service temporarily unavailable"), "Redis away at end of message: 451 4.3.0")
	mt.disconnect(conn)
end },
}

run(cases[phase])
