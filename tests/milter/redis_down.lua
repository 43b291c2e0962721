-- redis_down.lua - with Redis stopped (phase "down") counted mail gets
-- 451 4.3.0 quickly; after it is back (phase "up") mail is accepted on
-- the same pooled connections, re-made transparently.
dofile(lib)

run {
{ "Redis " .. phase, function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "downco" }, { "X-Quota-Category", "crm" } })
	if phase == "down" then
		check(r == SMFIR_REPLYCODE and mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0",
			"Quota service temporarily unavailable"), "451 4.3.0 while Redis is down")
	else
		check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT, "accepted once Redis is back")
	end
	mt.disconnect(conn)
end },
}
