-- reload.lua - one message for rl-co; expect = "accept" or the reply text
dofile(lib)

run {
{ "reload " .. expect, function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "rl-co" }, { "X-Quota-Category", "crm" } })
	if expect == "accept" then
		check(accepted(r), "accepted (" .. expect .. ")")
	else
		check(refused(conn, r, "550", "5.7.1", expect),
			"refused: " .. expect)
	end
	mt.disconnect(conn)
end },
}
