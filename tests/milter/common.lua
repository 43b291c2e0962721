-- common.lua - helpers for the miltertest scripts (loaded with dofile).
-- Globals from miltertest -D: sock (milter socket), rport (Redis port).

-- check - one test case line for tests/run.sh
function check(cond, name)
	if cond then
		print("ok - " .. name)
	else
		print("not ok - " .. name)
	end
end

-- redis - run redis-cli on the test's Redis, return its output trimmed
function redis(args)
	local p = io.popen("redis-cli -p " .. rport .. " --raw " .. args)
	local out = p:read("*a")
	p:close()
	return (out:gsub("%s+$", ""))
end

-- usage - a field of the account's usage hash this month (-D month)
function usage(acct, field)
	return redis("HGET 'qm:usage:{" .. acct .. "}:" .. month .. "' " .. field)
end

-- uncounted - the account has no usage hash this month
function uncounted(acct)
	return redis("EXISTS 'qm:usage:{" .. acct .. "}:" .. month .. "'") == "0"
end

-- crm - the headers of a counted message of ACCOUNT, category crm
function crm(acct)
	return { { "X-Quota-Account", acct }, { "X-Quota-Category", "crm" }, { "Subject", "hi" } }
end

-- accepted - does the reply let the message go on?
function accepted(r)
	return r == SMFIR_CONTINUE or r == SMFIR_ACCEPT
end

-- refused - is the end-of-message reply r this SMTP reply? (mt.eom_check
-- is false unless given all of code, xcode and text)
function refused(conn, r, code, xcode, text)
	return r == SMFIR_REPLYCODE and mt.eom_check(conn, MT_SMTPREPLY, code, xcode, text)
end

-- connect - a connection to the milter, nothing sent yet
function connect()
	local conn = mt.connect(sock, 40, 0.05)
	assert(conn ~= nil, "mt.connect failed")
	return conn
end

-- open - connect as an SMTP client host/ip, with optional connect macros
function open(host, ip, cmacros)
	local conn = connect()
	if cmacros ~= nil then
		assert(mt.macro(conn, SMFIC_CONNECT, table.unpack(cmacros)) == nil, "connect macro")
	end
	assert(mt.conninfo(conn, host or "client.example", ip or "127.0.0.1") == nil, "conninfo")
	return conn
end

-- one - a whole message from <crm@app.example> on a new connection from
-- ip (host optional): RCPTs, MAIL macros optional, headers; returns the
-- conn (still open) and the reply at end of message
function one(ip, rcpts, headers, macros, host)
	local conn = open(host, ip)
	envelope(conn, "<crm@app.example>", rcpts, macros)
	return conn, content(conn, headers)
end

-- envelope - MAIL FROM (with optional macros) and RCPT TOs; returns the
-- list of replies to each RCPT
function envelope(conn, from, rcpts, macros)
	if macros ~= nil then
		assert(mt.macro(conn, SMFIC_MAIL, table.unpack(macros)) == nil, "macro")
	end
	assert(mt.mailfrom(conn, from) == nil, "mailfrom")
	local replies = {}
	for i, r in ipairs(rcpts) do
		assert(mt.rcptto(conn, r) == nil, "rcptto")
		replies[i] = mt.getreply(conn)
	end
	return replies
end

-- content - headers (list of {name, value}) and end of message; the
-- headers are not sent when the milter negotiated them away (SMFIP_NOHDRS)
function content(conn, headers)
	if not mt.test_option(conn, SMFIP_NOHDRS) then
		for _, h in ipairs(headers) do
			assert(mt.header(conn, h[1], h[2]) == nil, "header")
		end
	end
	assert(mt.eom(conn) == nil, "eom")
	return mt.getreply(conn)
end

-- drop_everywhere - sessions from FROM (MAIL macros optional) to two
-- recipients dropped at every stage, polite and abrupt, then 50 open at
-- once in the middle of a message, all dropped; HEADERS (default a
-- Subject) are sent at the header stages when the milter asks for headers
function drop_everywhere(from, macros, headers)
	headers = headers or { { "Subject", "going" } }
	local rcpts = { "<a@x.example>", "<b@x.example>" }
	local function send_headers(conn)
		if mt.test_option(conn, SMFIP_NOHDRS) then return end
		for _, h in ipairs(headers) do
			assert(mt.header(conn, h[1], h[2]) == nil, "header")
		end
	end
	local stages = { "connect", "conninfo", "mailfrom", "rcpt", "data", "headers", "abort" }
	for _, polite in ipairs({ true, false }) do
		for n, stage in ipairs(stages) do
			local conn = n == 1 and connect() or open()
			if n >= 3 then
				if macros then
					assert(mt.macro(conn, SMFIC_MAIL, table.unpack(macros)) == nil)
				end
				assert(mt.mailfrom(conn, from) == nil)
			end
			if n >= 4 then
				for _, r in ipairs(rcpts) do assert(mt.rcptto(conn, r) == nil) end
			end
			if stage == "data" and not mt.test_option(conn, SMFIP_NODATA) then
				assert(mt.data(conn) == nil)
			end
			if n >= 6 then send_headers(conn) end
			if stage == "abort" then assert(mt.abort(conn) == nil) end
			mt.disconnect(conn, polite)
		end
	end
	local conns = {}
	for i = 1, 50 do
		conns[i] = open()
		envelope(conns[i], from, rcpts, macros)
		send_headers(conns[i])
	end
	for i = 1, 50 do mt.disconnect(conns[i], i % 2 == 0) end
end

-- run - each case in pcall, so that an error is a failed case, not silence
function run(cases)
	for _, c in ipairs(cases) do
		local good, err = pcall(c[2])
		if not good then
			print("not ok - " .. c[1] .. ": " .. tostring(err))
		end
	end
end
