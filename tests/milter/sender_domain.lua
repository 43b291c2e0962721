-- sender_domain.lua - account from the envelope sender's domain, known
-- before DATA: recipients beyond the quota are refused one by one at RCPT.
-- Set by the caller: shop.example basic with limit 2,
-- race.example limit 1, free.example with no plan (default free).
dofile(lib)

local three = { "<a@x.example>", "<b@x.example>", "<c@x.example>" }

run {
{ "RCPT stage: exactly the quota is sent", function()
	local conn = open()
	local r = envelope(conn, "<news@Shop.Example>", three)
	check(r[1] == SMFIR_CONTINUE and r[2] == SMFIR_CONTINUE, "first two recipients accepted")
	check(r[3] == SMFIR_REPLYCODE, "third recipient refused at RCPT")
	local e = content(conn, {})
	check(e == SMFIR_CONTINUE or e == SMFIR_ACCEPT, "message with two recipients accepted")
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
	check(e == SMFIR_REPLYCODE and mt.eom_check(conn, MT_SMTPREPLY, "451", "4.7.1",
		"Monthly sending limit of 1 emails reached for account race.example meanwhile, try again later"),
		"temporary refusal, retry decides")
	check(usage("race.example", "total") == "1", "only the other host's message counted")
	check(usage("race.example", "refused") == "", "a 451 is not recorded as refused (the retry will be)")
	mt.disconnect(conn)
end },
}
