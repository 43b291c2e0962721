-- negotiate.lua - what the daemon asks the MTA for at negotiation, for
-- t_milter.sh. -D part=header: the shipped conf (header accounts and
-- categories) over TCP; nego-full on plan basic with limit 0.
-- -D part=envelope: sender-domain accounts, category
-- crm { sender = "@" }, over a unix socket. -D part=reload: starts with a
-- sender-domain conf; -D pid=PID -D log=FILE: the daemon, whose conf file
-- already holds a header-account conf that SIGUSR1 makes it load;
-- nego.example and nego-co on plan basic. -D part=oom: the shipped conf
-- over a unix socket, the daemon run with tests/oomfail.c, which makes the
-- copy of an envelope sender <oom-...> fail as if memory ran out.
dofile(lib)

-- asks - true when every listed SMFIP_* option was negotiated, false when
-- none was; an error names the first that differs
local function asks(conn, want, options)
	for _, o in ipairs(options) do
		if mt.test_option(conn, o[2]) ~= want then
			error((want and "does not ask for " or "asks for ") .. o[1])
		end
	end
	return true
end

local skipped = { { "NOHELO", SMFIP_NOHELO }, { "NOEOH", SMFIP_NOEOH },
	{ "NOBODY", SMFIP_NOBODY }, { "NOUNKNOWN", SMFIP_NOUNKNOWN } }

local cases = {}

cases.header = {
{ "shipped conf: headers kept, no reply to connect, MAIL, RCPT, headers", function()
	local conn = open()
	check(asks(conn, true, skipped), "HELO, end of headers, body, unknown commands skipped")
	check(asks(conn, true, { { "NR_CONN", SMFIP_NR_CONN }, { "NR_MAIL", SMFIP_NR_MAIL },
		{ "NR_RCPT", SMFIP_NR_RCPT }, { "NR_HDR", SMFIP_NR_HDR } }),
		"no reply asked for connect, MAIL (no message can pass there), RCPT, headers")
	check(asks(conn, false, { { "NOHDRS", SMFIP_NOHDRS }, { "NODATA", SMFIP_NODATA },
		{ "NORCPT", SMFIP_NORCPT } }),
		"headers, DATA (over TCP) and recipients (unit recipients) still sent")
	mt.disconnect(conn)
end },

{ "no reply to headers: the end-of-message reply is the refusal", function()
	-- A stray reply to a header would be read as the end-of-message one.
	local conn = open()
	local r = envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	check(r[1] == SMFIR_CONTINUE, "recipient goes on (no reply read)")
	assert(mt.data(conn) == nil)
	check(mt.getreply(conn) == SMFIR_CONTINUE, "DATA answered")
	r = content(conn, { { "Subject", "one" }, { "From", "<crm@app.example>" },
		{ "X-Quota-Account", "nego-full" }, { "X-Quota-Category", "crm" }, { "To", "<a@x.example>" } })
	check(r == SMFIR_REPLYCODE, "nego-full (limit 0) refused at end of message")
	-- and the next message on the connection is in step too
	envelope(conn, "<crm@app.example>", { "<b@x.example>" })
	r = content(conn, { { "Subject", "two" } })
	check(accepted(r), "a message matching no category passes")
	mt.disconnect(conn)
end },

{ "an MTA that offers no 'no reply' steps (protocol 2): every event answered", function()
	local conn = connect()
	-- protocol 2: the MTA can skip connect, HELO, MAIL, RCPT, body, headers
	local err = mt.negotiate(conn, 2, SMFIF_CHGHDRS, SMFIP_NOCONNECT + SMFIP_NOHELO
		+ SMFIP_NOMAIL + SMFIP_NORCPT + SMFIP_NOBODY + SMFIP_NOHDRS)
	check(err == nil, "negotiated: " .. tostring(err))
	check(asks(conn, false, { { "NR_CONN", SMFIP_NR_CONN }, { "NR_MAIL", SMFIP_NR_MAIL },
		{ "NR_RCPT", SMFIP_NR_RCPT }, { "NR_HDR", SMFIP_NR_HDR }, { "NOEOH", SMFIP_NOEOH } }),
		"asks for nothing the MTA did not offer")
	assert(mt.conninfo(conn, "client.example", "127.0.0.1") == nil)
	check(mt.getreply(conn) == SMFIR_CONTINUE, "connect answered")
	local r = envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	check(r[1] == SMFIR_CONTINUE, "RCPT answered")
	r = content(conn, { { "X-Quota-Account", "nego-full" }, { "X-Quota-Category", "crm" } })
	check(r == SMFIR_REPLYCODE, "the decision is the same: refused at end of message")
	mt.disconnect(conn)
end },
}

cases.envelope = {
{ "envelope-only conf: no headers asked for, RCPT answered", function()
	local conn = open()
	check(asks(conn, true, skipped), "HELO, end of headers, body, unknown commands skipped")
	check(asks(conn, true, { { "NOHDRS", SMFIP_NOHDRS }, { "NODATA", SMFIP_NODATA },
		{ "NR_CONN", SMFIP_NR_CONN }, { "NR_MAIL", SMFIP_NR_MAIL } }),
		"no headers, no DATA (unix socket), no reply to connect and MAIL")
	check(asks(conn, false, { { "NR_RCPT", SMFIP_NR_RCPT }, { "NORCPT", SMFIP_NORCPT },
		{ "NR_HDR", SMFIP_NR_HDR } }), "RCPT (may refuse) answered")
	-- a sender with no '@' matches no category: let through at the first RCPT
	assert(mt.mailfrom(conn, "<>") == nil)
	check(mt.getreply(conn) == SMFIR_CONTINUE, "MAIL: no reply")
	assert(mt.rcptto(conn, "<a@x.example>") == nil)
	check(mt.getreply(conn) == SMFIR_ACCEPT, "null sender accepted at its first RCPT")
	mt.disconnect(conn)
end },
}

cases.reload = {
{ "SIGUSR1 mid-session: the session keeps the conf it negotiated", function()
	local old = open()
	check(mt.test_option(old, SMFIP_NOHDRS), "first conf (sender-domain) negotiates headers away")
	local r = envelope(old, "<news@nego.example>", { "<a@x.example>", "<b@x.example>" })
	check(r[1] == SMFIR_CONTINUE and r[2] == SMFIR_CONTINUE, "recipients accepted at RCPT")

	os.execute("kill -USR1 " .. pid)
	local reloaded = false
	for _ = 1, 100 do
		local f = io.open(log)
		local text = f and f:read("*a") or ""
		if f then f:close() end
		if text:find("reloaded ", 1, true) then reloaded = true break end
		mt.sleep(0.1)
	end
	check(reloaded, "the daemon reloaded (a header-account conf)")

	local new = open()
	check(not mt.test_option(new, SMFIP_NOHDRS), "a new session asks for headers")
	envelope(new, "<crm@app.example>", { "<c@x.example>" })
	r = content(new, { { "X-Quota-Account", "nego-co" }, { "X-Quota-Category", "crm" } })
	check(accepted(r), "new session decided on the new conf (header account)")
	mt.disconnect(new)

	-- The old session sends no header; with the new conf it would have no account.
	r = content(old, {})
	check(accepted(r), "old session decided on its own conf (sender-domain)")
	mt.disconnect(old)
	check(usage("nego.example", "total") == "2", "old session counted for the sender's domain")
	check(usage("nego-co", "total") == "1", "new session counted for the header's account")
end },
}

cases.oom = {
{ "out of memory where no reply is negotiated: tempfail at the next reply", function()
	local conn = open()
	check(mt.test_option(conn, SMFIP_NR_MAIL) and mt.test_option(conn, SMFIP_NR_RCPT)
		and mt.test_option(conn, SMFIP_NODATA), "MAIL and RCPT unanswered, no DATA")
	local r = envelope(conn, "<oom-sender@app.example>", { "<a@x.example>" })
	check(r[1] == SMFIR_CONTINUE, "the failure at MAIL is not lost at RCPT (no reply there)")
	r = content(conn, { { "X-Quota-Account", "nego-co" }, { "X-Quota-Category", "crm" } })
	check(r == SMFIR_TEMPFAIL, "tempfailed at end of message, the first event with a reply")
	-- the failure was the message's: the next one on the connection is fine
	envelope(conn, "<crm@app.example>", { "<b@x.example>" })
	r = content(conn, { { "X-Quota-Account", "nego-co" }, { "X-Quota-Category", "crm" } })
	check(accepted(r), "next message on the connection accepted")
	mt.disconnect(conn)
	check(usage("nego-co", "total") == "2", "only that one counted (1 before)")
end },
}

run(cases[part])
