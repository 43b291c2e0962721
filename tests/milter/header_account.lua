-- header_account.lua - the shipped conf's way: account and category in
-- headers, decided at end of message. Redis state is set by the caller:
-- acme on plan basic with limit override 5, tiny suspended, nobody has no plan.
dofile(lib)

run {
{ "header account: counted and stripped", function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>", "<b@x.example>", "<c@x.example>" })
	local r = content(conn, crm("acme"))
	check(accepted(r), "3 recipients accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "account header removed")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Category"), "category header removed")
	check(usage("acme", "total") == "3", "total is 3")
	check(usage("acme", "crm") == "3", "crm field is 3")
	check(usage("acme", "messages") == "1", "messages is 1")

	-- A second message in the same connection would make 6 of 5: refused whole.
	envelope(conn, "<crm@app.example>", { "<a@x.example>", "<b@x.example>", "<c@x.example>" })
	r = content(conn, crm("acme"))
	check(r == SMFIR_REPLYCODE, "second message refused")
	check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1",
		"Monthly sending limit of 5 emails reached for account acme (plan basic)"),
		"refused with the SPEC's 550 5.7.1 text")
	check(usage("acme", "total") == "3", "refused message not counted")
	check(usage("acme", "refused") == "3", "refused units recorded")

	-- A third, with 2 recipients, fits exactly.
	envelope(conn, "<crm@app.example>", { "<a@x.example>", "<b@x.example>" })
	r = content(conn, { { "X-Quota-Account", "acme" }, { "X-Quota-Category", "workflow" } })
	check(accepted(r), "third message fits exactly")
	check(usage("acme", "total") == "5", "total is exactly the limit")
	check(usage("acme", "automation") == "2", "workflow counted as automation")
	mt.disconnect(conn)
end },

{ "abort and RSET are not counted", function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	assert(mt.header(conn, "X-Quota-Account", "abort-co") == nil)
	assert(mt.header(conn, "X-Quota-Category", "crm") == nil)
	assert(mt.abort(conn) == nil)
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	assert(mt.abort(conn) == nil)
	mt.disconnect(conn)
	check(uncounted("abort-co"), "aborted message left no usage")
end },

{ "mail in no category passes uncounted, its account header removed", function()
	local conn = open()
	envelope(conn, "<user@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "plain-co" }, { "Subject", "x" } })
	check(accepted(r), "accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "account header removed (strip_headers)")
	check(not mt.eom_check(conn, MT_HDRDELETE, "Subject"), "other headers left alone")
	check(uncounted("plain-co"), "not counted")
	mt.disconnect(conn)
end },

{ "untrusted client with account header", function()
	local conn = open("mx.example", "192.0.2.7")
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, crm("victim"))
	check(r == SMFIR_REPLYCODE, "refused")
	check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1",
		"Account header X-Quota-Account not accepted: client is outside trusted_networks and not authenticated"),
		"550 5.7.1 with the reason")
	check(uncounted("victim"), "victim not charged")
	mt.disconnect(conn)
end },

{ "a login in trusted_logins may declare, from outside trusted_networks", function()
	local conn = open("mx.example", "192.0.2.8")
	envelope(conn, "<crm@app.example>", { "<a@x.example>" }, { "{auth_authen}", "crm-relay" })
	local r = content(conn, crm("authd"))
	check(refused(conn, r, "550", "5.7.1",
		"Plan free of account authd does not include outgoing mail"),
		"account trusted, then refused by default plan free")
	mt.disconnect(conn)
end },

{ "any other login may not, even from trusted_networks: no tenant bills another", function()
	for _, from in ipairs({ "192.0.2.9", "127.0.0.1" }) do
		local conn = open("mx.example", from)
		envelope(conn, "<crm@app.example>", { "<a@x.example>" }, { "{auth_authen}", "customer-7" })
		local r = content(conn, crm("victim"))
		check(refused(conn, r, "550", "5.7.1",
			"Account header X-Quota-Account not accepted: the SMTP AUTH login is not in trusted_logins"),
			"login customer-7 from " .. from .. ": 550 5.7.1 untrusted")
		mt.disconnect(conn)
	end
	check(uncounted("victim"), "victim not charged")
end },

{ "hostile account ids refused, no key made", function()
	local bad = {
		{ "ac{me}", "characters outside A-Z a-z 0-9 . _ @ + -" },
		{ "ac me", "characters outside A-Z a-z 0-9 . _ @ + -" },
		{ "100%s", "characters outside A-Z a-z 0-9 . _ @ + -" },
		{ string.rep("a", 129), "longer than 128 characters" },
		{ "caf\195\169", "characters outside A-Z a-z 0-9 . _ @ + -" },
		{ "a\1b", "characters outside A-Z a-z 0-9 . _ @ + -" },
	}
	for i, b in ipairs(bad) do
		local conn = open()
		envelope(conn, "<crm@app.example>", { "<a@x.example>" })
		local r = content(conn, crm(b[1]))
		check(refused(conn, r, "550", "5.7.1",
			"Invalid sending account: " .. b[2]),
			"bad id " .. i .. " refused with 550 5.7.1")
		mt.disconnect(conn)
	end
	check(redis("KEYS '*'"):find("ac me", 1, true) == nil, "no key from a bad id")
end },

{ "refusals, each with its reason", function()
	-- headers, reply code, xcode and text, case name, and a check after it
	local cases = {
		{ { { "X-Quota-Account", "one" }, { "X-Quota-Account", "two" }, { "X-Quota-Category", "crm" } },
			"550", "5.7.1", "Message names more than one sending account", "conflict refused",
			function() return uncounted("one") end, "nobody charged" },
		{ { { "X-Quota-Category", "marketing" } }, "550", "5.7.1",
			"No sending account for marketing mail: no account header", "refused with reason" },
		{ crm("tiny"), "550", "5.7.1", "Sending is suspended for account tiny", "suspended refused" },
		-- plan not in the conf: 451, and a '%' in the reply text is escaped
		{ crm("gold-co"), "451", "4.3.5", "Plan gold of account gold-co is not configured, 100%% sure",
			"percent doubled", function() return usage("gold-co", "total") == "" end, "not counted" },
	}
	for _, c in ipairs(cases) do
		local conn, r = one("127.0.0.1", { "<a@x.example>" }, c[1])
		check(refused(conn, r, c[2], c[3], c[4]), c[5])
		if c[6] then check(c[6](), c[7]) end
		mt.disconnect(conn)
	end
end },

{ "enterprise is unlimited", function()
	local conn = open()
	local rcpts = {}
	for i = 1, 50 do rcpts[i] = "<r" .. i .. "@x.example>" end
	envelope(conn, "<crm@app.example>", rcpts)
	local r = content(conn, crm("bigcorp"))
	check(accepted(r), "accepted")
	check(usage("bigcorp", "total") == "50", "50 counted")
	mt.disconnect(conn)
end },
}
