-- hostile_envelope.lua - hostile input to the daemon when the account is
-- known before DATA, for t_milter_hostile.sh. -D part=sender: accounts
-- from the envelope sender's domain (category all { sender = "." });
-- rcpt-co.example on plan basic with limit 100, drop.example on plan
-- enterprise. -D part=sasl: accounts from {auth_authen}, categories
-- sub { daemon = "submission" sender = "." } and any { sender = "." };
-- app-1 on plan basic with limit 100.
-- (a RCPT reply is only seen as a reply code.)
dofile(lib)

-- refused_at_rcpt FROM MACROS CONNECT_MACROS - a one-recipient message whose
-- recipient is refused; the client gives up
local function refused_at_rcpt(from, macros, cmacros)
	local conn = open(nil, nil, cmacros)
	local r = envelope(conn, from, { "<a@x.example>" }, macros)
	mt.disconnect(conn)
	return r[1] == SMFIR_REPLYCODE
end

local sender_cases = {
{ "10 000 recipients: exactly the quota accepted at RCPT", function()
	local conn = open()
	assert(mt.mailfrom(conn, "<bulk@rcpt-co.example>") == nil)
	local ok, refused, order = 0, 0, true
	for i = 1, 10000 do
		assert(mt.rcptto(conn, "<r" .. i .. "@x.example>") == nil, "rcptto")
		local r = mt.getreply(conn)
		if r == SMFIR_CONTINUE then
			ok = ok + 1
			if refused > 0 then order = false end
		elseif r == SMFIR_REPLYCODE then
			refused = refused + 1
		end
	end
	check(ok == 100 and refused == 9900 and order,
		"first 100 accepted, the other 9900 refused (" .. ok .. "/" .. refused .. ")")
	local r = content(conn, { { "Subject", "bulk" } })
	check(accepted(r), "the message with its 100 recipients accepted")
	mt.disconnect(conn)
	check(usage("rcpt-co.example", "total") == "100", "total is exactly 100")
	check(usage("rcpt-co.example", "refused") == "9900", "9900 refused recorded")
end },

{ "hostile sender domains: refused at RCPT, nothing counted", function()
	local bad = {
		"<a@{evil}>", "<a@b}:{c>", "<a@ev il.example>", "<a@%n%s.example>", "<a@100%>",
		"<a@" .. string.rep("d", 129) .. ">", "<a@" .. string.rep("e", 900) .. ">",
		"<a@caf\195\169.example>", "<a@ex\1ample>", "<a@ex\r\nample>", "<a@ex\127ample>",
		"<a@>", "<@>", "<nodomain>", "<a@qm:usage:{drop.example}:" .. month .. ">",
	}
	local all = true
	for i, from in ipairs(bad) do
		if not refused_at_rcpt(from) then
			print("# bad sender " .. i .. " not refused at RCPT")
			all = false
		end
	end
	check(all, "each of " .. #bad .. " bad sender domains refused at RCPT")
	-- The null sender matches no category (sender = "."): accepted at MAIL,
	-- or at the first RCPT when MAIL gets no reply (SMFIP_NR_MAIL),
	-- uncounted (the MTA tells the milter no more of that message).
	local conn = open()
	assert(mt.mailfrom(conn, "<>") == nil)
	local r = mt.getreply(conn)
	if mt.test_option(conn, SMFIP_NR_MAIL) then
		assert(mt.rcptto(conn, "<a@x.example>") == nil)
		r = mt.getreply(conn)
	end
	check(r == SMFIR_ACCEPT, "null sender: accepted, uncounted")
	mt.disconnect(conn)
end },

{ "a client that disconnects at every stage", function()
	drop_everywhere("<n@drop.example>")
	check(uncounted("drop.example"),
		"recipients accepted at RCPT but never sent: nothing counted")
end },

{ "still answers a normal message correctly", function()
	local conn = open()
	local r = envelope(conn, "<n@Drop.Example>", { "<a@x.example>", "<b@x.example>", "<c@x.example>" })
	check(accepted(r[1]) and accepted(r[2]) and accepted(r[3]), "recipients accepted")
	r = content(conn, { { "Subject", "normal" } })
	check(accepted(r), "message accepted")
	mt.disconnect(conn)
	check(usage("drop.example", "total") == "3", "counted exactly 3")
end },
}

local sasl_cases = {
{ "missing, empty and hostile {auth_authen}: refused at RCPT", function()
	check(refused_at_rcpt("<crm@app.example>"), "no {auth_authen} macro: refused")
	check(refused_at_rcpt("<crm@app.example>", { "{auth_authen}", "" }), "empty {auth_authen}: refused")
	local bad = { "us er", "{app-1}", "app-1}:{x", "%n%s%x", "app-1\r\nX: y", "app\1-1",
		string.rep("u", 129), "caf\195\169" }
	local all = true
	for i, login in ipairs(bad) do
		if not refused_at_rcpt("<crm@app.example>", { "{auth_authen}", login }) then
			print("# bad login " .. i .. " not refused at RCPT")
			all = false
		end
	end
	check(all, "each of " .. #bad .. " bad logins refused at RCPT")
end },

{ "missing and hostile {daemon_name}", function()
	local function send(cmacros)
		local conn = open(nil, nil, cmacros)
		local r = envelope(conn, "<crm@app.example>", { "<a@x.example>" }, { "{auth_authen}", "app-1" })
		local e = content(conn, { { "Subject", "x" } })
		mt.disconnect(conn)
		return accepted(r[1]) and accepted(e)
	end
	check(send(nil), "no {daemon_name}: accepted")
	check(usage("app-1", "any") == "1", "as category any")
	check(send({ "{daemon_name}", "submission" }), "{daemon_name} submission: accepted")
	check(usage("app-1", "sub") == "1", "as category sub")
	check(send({ "{daemon_name}", "%n%s\r\nsubmission" }), "hostile {daemon_name}: accepted")
	check(usage("app-1", "any") == "2", "as category any")
end },

{ "a client that disconnects at every stage", function()
	drop_everywhere("<crm@app.example>", { "{auth_authen}", "app-1" })
	check(usage("app-1", "total") == "3", "nothing more counted")
end },
}

run(part == "sasl" and sasl_cases or sender_cases)
