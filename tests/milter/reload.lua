-- reload.lua - one message for rl-co; expect = "accept" or the reply text
dofile(lib)

run {
{ "reload " .. expect, function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "rl-co" }, { "X-Quota-Category", "crm" } })
	if expect == "accept" then
		check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT, "accepted (" .. expect .. ")")
	else
		check(r == SMFIR_REPLYCODE and mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1", expect),
			"refused: " .. expect)
	end
	mt.disconnect(conn)
end },
}
