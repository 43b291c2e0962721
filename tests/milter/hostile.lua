-- hostile.lua - hostile input to the daemon with the shipped conf (account
-- and category in headers, decided at end of message), for t_milter_hostile.sh.
-- Set by the caller: ent-co on plan enterprise, cap-co on plan basic with
-- limit 5000, ok-co on plan basic with limit 100, gone-co on plan enterprise,
-- and the 128-character id in -D long128 on plan enterprise.
-- (miltertest cannot send a header value over about 1000 bytes: its own
-- stack buffer overflows; t_milter_hostile.sh sends the 64 KiB header
-- through Postfix.)
dofile(lib)

local bad_reason = "characters outside A-Z a-z 0-9 . _ @ + -"

run {
{ "hostile account ids: 550 5.7.1, nothing counted", function()
	local bad = {
		{ "{acme}", bad_reason },
		{ "ac}:{me", bad_reason },
		{ "ac me", bad_reason },
		{ "ac\tme", bad_reason },
		{ "acme\r\nX-Injected: 1", bad_reason },
		{ "ac\1me", bad_reason },
		{ "ac\127me", bad_reason },
		{ "%s%n%x", bad_reason },
		{ "100%", bad_reason },
		{ "%%", bad_reason },
		{ "qm:usage:{ok-co}:" .. month, bad_reason },
		{ "ok-co*", bad_reason },
		{ "caf\195\169", bad_reason },
		{ "\255\254ok-co", bad_reason },
		{ string.rep("a", 129), "longer than 128 characters" },
		{ string.rep("b", 900), "longer than 128 characters" },
		{ "", "empty" },
		{ "   ", "empty" },
	}
	local all = true
	for i, b in ipairs(bad) do
		local conn, r = one("127.0.0.1", { "<a@x.example>" }, crm(b[1]))
		local good = refused(conn, r, "550", "5.7.1",
			"Invalid sending account: " .. b[2])
		if not good then
			print("# bad id " .. i .. " not refused as expected")
			all = false
		end
		check(not mt.eom_check(conn, MT_HDRDELETE), "bad id " .. i .. ": headers left alone")
		mt.disconnect(conn)
	end
	check(all, "each of " .. #bad .. " bad ids refused: 550 5.7.1 Invalid sending account: REASON")
end },

{ "128-character id is valid", function()
	local conn, r = one("127.0.0.1", { "<a@x.example>" }, crm(long128))
	check(accepted(r), "accepted")
	check(usage(long128, "total") == "1", "counted under its 128-character id")
	mt.disconnect(conn)
end },

{ "account header from outside trusted_networks, unauthenticated", function()
	-- A client of an unknown address family is not trusted either.
	for _, ip in ipairs({ "192.0.2.7", "2001:db8::7", "10.0.0.1", "unspec" }) do
		local conn, r = one(ip, { "<a@x.example>" }, crm("ok-co"), nil, ip == "unspec" and "weird.example")
		check(refused(conn, r, "550", "5.7.1",
			"Account header X-Quota-Account not accepted: client is outside trusted_networks and not authenticated"),
			(ip == "unspec" and "client of unknown address family" or "from " .. ip) .. ": refused 550 5.7.1")
		mt.disconnect(conn)
	end
	check(usage("ok-co", "total") == "", "the named account was never charged")
end },

{ "thousands of headers", function()
	local h = {}
	for i = 1, 5000 do h[#h + 1] = { "X-Junk-" .. i, "junk value " .. i } end
	h[#h + 1] = { "X-Quota-Account", "ent-co" }
	h[#h + 1] = { "X-Quota-Category", "crm" }
	local conn, r = one("127.0.0.1", { "<a@x.example>" }, h)
	check(accepted(r), "5000 other headers: accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account")
		and mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Category"), "and its quota headers stripped")
	mt.disconnect(conn)
	check(usage("ent-co", "total") == "1", "counted once")

	-- Only the first 64 account and category headers are kept; past that
	-- the message cannot be classified or attributed safely: refused.
	local too_many = "Invalid sending account: account or category headers too long or too many"
	local cases = {
		{ "category header, then 5000 account headers", function(h)
			h[#h + 1] = { "X-Quota-Category", "crm" }
			for i = 1, 5000 do h[#h + 1] = { "X-Quota-Account", "ent-co" } end
		end },
		{ "account header, then 5000 category headers", function(h)
			h[#h + 1] = { "X-Quota-Account", "ent-co" }
			for i = 1, 5000 do h[#h + 1] = { "X-Quota-Category", "crm" } end
		end },
		-- The category header after 64 others is dropped: the message must
		-- not pass as uncategorized, uncounted mail.
		{ "5000 account headers, then the category header", function(h)
			for i = 1, 5000 do h[#h + 1] = { "X-Quota-Account", "ent-co" } end
			h[#h + 1] = { "X-Quota-Category", "crm" }
		end },
		{ "100 non-matching category headers, then account and category", function(h)
			for i = 1, 100 do h[#h + 1] = { "X-Quota-Category", "none" } end
			h[#h + 1] = { "X-Quota-Account", "ent-co" }
			h[#h + 1] = { "X-Quota-Category", "crm" }
		end },
	}
	for _, c in ipairs(cases) do
		h = {}
		c[2](h)
		conn, r = one("127.0.0.1", { "<a@x.example>" }, h)
		check(refused(conn, r, "550", "5.7.1", too_many),
			c[1] .. ": refused 550 5.7.1")
		mt.disconnect(conn)
	end
	check(usage("ent-co", "total") == "1", "neither counted")
end },

{ "10 000 recipients in one message", function()
	local rcpts = {}
	for i = 1, 10000 do rcpts[i] = "<r" .. i .. "@x.example>" end
	local conn = open()
	assert(mt.mailfrom(conn, "<crm@app.example>") == nil)
	local all = true
	for i = 1, #rcpts do
		assert(mt.rcptto(conn, rcpts[i]) == nil, "rcptto")
		if mt.getreply(conn) ~= SMFIR_CONTINUE then all = false end
	end
	check(all, "enterprise: each of 10 000 recipients passes RCPT")
	local r = content(conn, crm("ent-co"))
	check(accepted(r), "enterprise: accepted")
	check(usage("ent-co", "total") == "10001", "enterprise: counted exactly 10 000")
	check(usage("ent-co", "messages") == "2", "enterprise: as one message")
	mt.disconnect(conn)

	conn = open()
	envelope(conn, "<crm@app.example>", rcpts)
	r = content(conn, crm("cap-co"))
	check(refused(conn, r, "550", "5.7.1",
		"Monthly sending limit of 5000 emails reached for account cap-co (plan basic)"),
		"limit 5000: refused whole")
	check(usage("cap-co", "total") == "", "limit 5000: nothing counted")
	check(usage("cap-co", "refused") == "10000", "limit 5000: 10 000 refused recorded")
	mt.disconnect(conn)
end },

{ "missing and hostile macros", function()
	-- No macros at all: no i, no {auth_authen}, no {daemon_name}, no HELO.
	local conn, r = one("127.0.0.1", { "<a@x.example>" }, crm("ok-co"))
	check(accepted(r), "no macros: accepted")
	mt.disconnect(conn)
	check(usage("ok-co", "total") == "1", "no macros: counted")
	-- Hostile values: a queue id and a login full of '%' and line breaks;
	-- a login not in trusted_logins may not name an account.
	conn = open("%s.example", "192.0.2.9", { "{daemon_name}", "%s%n\r\n%x", "j", "%n%n" })
	envelope(conn, "<%n%s@app.example>", { "<%s%s%s@x.example>" },
		{ "i", "%s%n%x%%", "{auth_authen}", "us%ser%n\r\nX: y", "{mail_addr}", "%n" })
	r = content(conn, crm("ok-co"))
	check(refused(conn, r, "550", "5.7.1",
		"Account header X-Quota-Account not accepted: the SMTP AUTH login is not in trusted_logins"),
		"hostile macro values: an untrusted login, refused cleanly")
	mt.disconnect(conn)
	check(usage("ok-co", "total") == "1", "hostile macro values: not counted")
	-- Empty {auth_authen}: not authenticated.
	conn = open("client.example", "192.0.2.9")
	envelope(conn, "<crm@app.example>", { "<a@x.example>" }, { "{auth_authen}", "" })
	r = content(conn, crm("ok-co"))
	check(refused(conn, r, "550", "5.7.1",
		"Account header X-Quota-Account not accepted: client is outside trusted_networks and not authenticated"),
		"empty {auth_authen} from outside: refused")
	mt.disconnect(conn)
	check(usage("ok-co", "total") == "1", "not counted")
end },

{ "a client that disconnects at every stage", function()
	-- The daemon negotiates HELO, end of headers and the body away; the
	-- last thing it can see before end of message is a header.
	drop_everywhere("<crm@app.example>", nil,
		{ { "X-Quota-Account", "gone-co" }, { "X-Quota-Category", "crm" }, { "Subject", "going" } })
	check(uncounted("gone-co"),
		"14 sessions dropped at each stage, 50 at once: nothing counted")
end },

{ "abort at every stage of a message, one connection: the next stays in step", function()
	-- libmilter resets the message at ABORT wherever it comes; the milter
	-- must forget what it gathered and never count an aborted message.
	local conn = open()
	local stages = { "mailfrom", "rcpt", "data", "headers" }
	for _, stage in ipairs(stages) do
		assert(mt.mailfrom(conn, "<crm@app.example>") == nil)
		if stage ~= "mailfrom" then
			assert(mt.rcptto(conn, "<a@x.example>") == nil)
		end
		if (stage == "data" or stage == "headers") and not mt.test_option(conn, SMFIP_NODATA) then
			assert(mt.data(conn) == nil)
		end
		if stage == "headers" then
			assert(mt.header(conn, "X-Quota-Account", "abort-co") == nil)
			assert(mt.header(conn, "X-Quota-Category", "crm") == nil)
		end
		assert(mt.abort(conn) == nil)
	end
	check(uncounted("abort-co"),
		"aborted at MAIL, RCPT, DATA and headers: nothing counted")
	-- a message with no account header after an aborted one that had it
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Category", "crm" } })
	check(refused(conn, r, "550", "5.7.1",
		"No sending account for crm mail: no account header"),
		"the aborted message's account header is forgotten")
	envelope(conn, "<crm@app.example>", { "<a@x.example>", "<b@x.example>" })
	r = content(conn, crm("abort-co"))
	check(accepted(r), "then a whole message is accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "and its account header removed")
	mt.disconnect(conn)
	check(usage("abort-co", "total") == "2" and usage("abort-co", "messages") == "1",
		"counted exactly once: 2 recipients, 1 message")
end },

{ "still answers a normal message correctly", function()
	local conn, r = one("127.0.0.1", { "<a@x.example>", "<b@x.example>" }, crm("gone-co"))
	check(accepted(r), "accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "account header stripped")
	-- and a second message on the same connection
	envelope(conn, "<crm@app.example>", { "<c@x.example>" })
	r = content(conn, crm("gone-co"))
	check(accepted(r), "second message on the connection accepted")
	mt.disconnect(conn)
	check(usage("gone-co", "total") == "3" and usage("gone-co", "messages") == "2",
		"counted exactly: 3 recipients in 2 messages")
end },
}
