-- sender_domain.lua - account from the envelope sender's domain, known
-- before DATA: recipients beyond the quota are refused one by one at RCPT.
-- Set by the caller: shop.example basic with limit 2,
-- race.example limit 1, free.example with no plan (default free),
-- busy.example basic (10 000), near.example basic with limit 100.
dofile(lib)

local three = { "<a@x.example>", "<b@x.example>", "<c@x.example>" }

-- script_calls - EVALSHA calls Redis has run so far
local function script_calls()
	return tonumber(redis("INFO commandstats"):match("cmdstat_evalsha:calls=(%d+)")) or 0
end

-- send - one message from sender to two recipients, accepted or not
local function send(sender)
	local conn = open()
	local r = envelope(conn, sender, { "<a@x.example>", "<b@x.example>" })
	local ok = r[1] == SMFIR_CONTINUE and r[2] == SMFIR_CONTINUE and accepted(content(conn, {}))
	mt.disconnect(conn)
	return ok
end

run {
{ "RCPT stage: exactly the quota is sent", function()
	local conn = open()
	local r = envelope(conn, "<news@Shop.Example>", three)
	check(r[1] == SMFIR_CONTINUE and r[2] == SMFIR_CONTINUE, "first two recipients accepted")
	check(r[3] == SMFIR_REPLYCODE, "third recipient refused at RCPT")
	local e = content(conn, {})
	check(accepted(e), "message with two recipients accepted")
	check(usage("shop.example", "total") == "2", "total is exactly the limit 2")
	check(usage("shop.example", "refused") == "1", "one refused recipient recorded")

	-- Next message: nothing left, every recipient refused; the client gives up (RSET).
	r = envelope(conn, "<news@shop.example>", { "<d@x.example>" })
	check(r[1] == SMFIR_REPLYCODE, "recipient of the next message refused")
	assert(mt.abort(conn) == nil)
	mt.disconnect(conn)
	check(usage("shop.example", "total") == "2", "still 2")
	check(usage("shop.example", "refused") == "2", "refusal of the aborted message recorded")
end },

{ "far from its limit, the last answer stands in for the peek", function()
	local before = script_calls()
	for i = 1, 4 do
		check(send("<n@busy.example>"), "message " .. i .. " accepted")
	end
	local calls = script_calls() - before
	-- a peek, then a charge per message: 5, when no second passes between them
	check(calls >= 5 and calls < 8, "5 Redis calls for 4 messages, not 8: " .. calls)
	check(usage("busy.example", "total") == "8", "all 8 recipients counted")

	-- Near the limit (a tenth of it, at least 100 units left): Redis each time.
	before = script_calls()
	check(send("<n@near.example>"), "near: first message accepted")
	check(send("<n@near.example>"), "near: second message accepted")
	check(script_calls() - before == 4, "near the limit: a peek and a charge each")
	check(usage("near.example", "total") == "4", "near: 4 counted")

	-- Refusals are Redis's: suspended meanwhile, refused at end of message.
	redis("HSET 'qm:account:{busy.example}' suspended 1")
	local conn = open()
	local r = envelope(conn, "<n@busy.example>", { "<a@x.example>" })
	if r[1] == SMFIR_CONTINUE then
		local e = content(conn, {})
		check(refused(conn, e, "550", "5.7.1",
			"Sending is suspended for account busy.example"), "suspension refused at end of message")
	else
		check(r[1] == SMFIR_REPLYCODE, "suspension refused at RCPT (a second had passed)")
	end
	mt.disconnect(conn)
	check(usage("busy.example", "total") == "8", "nothing more counted")
	redis("HDEL 'qm:account:{busy.example}' suspended")
end },

{ "plan without outgoing mail: refused at RCPT", function()
	local conn = open()
	local r = envelope(conn, "<a@free.example>", { "<a@x.example>" })
	check(r[1] == SMFIR_REPLYCODE, "refused")
	mt.disconnect(conn)
	check(usage("free.example", "total") == "", "nothing counted")
end },

{ "quota taken by another host between RCPT and end of message: 451 4.7.1", function()
	local conn = open()
	local r = envelope(conn, "<x@race.example>", { "<a@x.example>" })
	check(r[1] == SMFIR_CONTINUE, "recipient accepted while 1 was left")
	redis("HINCRBY 'qm:usage:{race.example}:" .. month .. "' total 1")
	local e = content(conn, {})
	check(refused(conn, e, "451", "4.7.1",
		"Monthly sending limit of 1 emails reached for account race.example meanwhile, try again later"),
		"temporary refusal, retry decides")
	check(usage("race.example", "total") == "1", "only the other host's message counted")
	check(usage("race.example", "refused") == "", "a 451 is not recorded as refused (the retry will be)")
	mt.disconnect(conn)
end },
}
