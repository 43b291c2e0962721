-- message.lua - one counted message (category crm) for an account, to show
-- that the milter obeys what quota-milter-ctl set or a reload changed.
-- Globals from miltertest -D: account, rcpts (how many recipients, default
-- 1), expect ("accept" or the reply text), code and xcode of that reply
-- (default 550 5.7.1), label (names the case).
dofile(lib)

run {
{ label, function()
	local conn = open()
	local list = {}
	for i = 1, tonumber(rcpts or 1) do
		list[i] = "<r" .. i .. "@x.example>"
	end
	envelope(conn, "<crm@app.example>", list)
	local r = content(conn, { { "X-Quota-Account", account }, { "X-Quota-Category", "crm" } })
	if expect == "accept" then
		check(accepted(r), label .. ": accepted")
	else
		check(refused(conn, r, code or "550", xcode or "5.7.1", expect),
			label .. ": refused with " .. expect)
	end
	mt.disconnect(conn)
end },
}
