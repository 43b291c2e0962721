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

-- accepted - does the reply let the message go on?
function accepted(r)
	return r == SMFIR_CONTINUE or r == SMFIR_ACCEPT
end

-- open - connect to the milter as an SMTP client host/ip
function open(host, ip)
	local conn = mt.connect(sock, 40, 0.05)
	assert(conn ~= nil, "mt.connect failed")
	assert(mt.conninfo(conn, host or "client.example", ip or "127.0.0.1") == nil, "conninfo")
	return conn
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

-- run - each case in pcall, so that an error is a failed case, not silence
function run(cases)
	for _, c in ipairs(cases) do
		local good, err = pcall(c[2])
		if not good then
			print("not ok - " .. c[1] .. ": " .. tostring(err))
		end
	end
end
