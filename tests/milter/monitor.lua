-- monitor.lua - monitor mode never refuses: over the quota it counts and
-- records would_refuse. Account problems are not quota: still refused. mon-co has limit 1.
dofile(lib)

run {
{ "monitor mode", function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>", "<b@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "mon-co" }, { "X-Quota-Category", "crm" } })
	check(accepted(r), "over the quota, still accepted")
	check(usage("mon-co", "total") == "2", "counted anyway")
	check(usage("mon-co", "would_refuse") == "2", "would_refuse recorded")
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	r = content(conn, { { "X-Quota-Account", "bad id" }, { "X-Quota-Category", "crm" } })
	check(refused(conn, r, "550", "5.7.1",
		"Invalid sending account: characters outside A-Z a-z 0-9 . _ @ + -"),
		"a bad account id is refused in monitor mode too (not a quota decision)")
	mt.disconnect(conn)
end },
}
