-- redis_down.lua - with Redis stopped (phase "down") counted mail gets
-- 451 4.3.0 quickly; after it is back (phase "up") mail is accepted on
-- the same pooled connections, re-made transparently. Phase "accept": the
-- conf says on_redis_error = accept, so mail passes while Redis is down.
dofile(lib)

run {
{ "Redis " .. phase, function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", account or "downco" }, { "X-Quota-Category", "crm" } })
	if phase == "down" then
		check(refused(conn, r, "451", "4.3.0",
			"Quota service temporarily unavailable"), "451 4.3.0 while Redis is down")
	elseif phase == "accept" then
		check(accepted(r), "accept mode: accepted while Redis is down")
	else
		check(accepted(r), "accepted once Redis is back")
	end
	mt.disconnect(conn)
end },
}
