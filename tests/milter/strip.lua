-- strip.lua - for t_milter.sh: a conf with header accounts whose category
-- is decided on the envelope (crm { sender = "@crm[.]example$" }), and
-- strip_headers on. Mail of no category is not counted, but it is followed
-- to its end and its account header removed: it must not tell recipients
-- the tenant's internal id. -D part=off: strip_headers = false, the same
-- mail is let through at its start, headers untouched.
dofile(lib)

run {
{ "mail of no category keeps no account header (" .. part .. ")", function()
	local conn = open()
	assert(mt.mailfrom(conn, "<news@other.example>") == nil, "mailfrom")
	if part == "off" then
		check(mt.getreply(conn) == SMFIR_ACCEPT, "strip_headers off: let through at MAIL")
		mt.disconnect(conn)
		return
	end
	check(mt.getreply(conn) == SMFIR_CONTINUE, "followed past MAIL, not let through")
	assert(mt.rcptto(conn, "<a@x.example>") == nil, "rcptto")
	local r
	r = content(conn, { { "X-Quota-Account", "tenant-internal-7" }, { "Subject", "news" } })
	check(accepted(r), "accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "its account header removed")
	check(uncounted("tenant-internal-7"), "nothing counted")
	-- counted mail on the same connection is still counted
	envelope(conn, "<app@crm.example>", { "<b@x.example>" })
	r = content(conn, { { "X-Quota-Account", "strip-co" }, { "Subject", "crm" } })
	check(accepted(r), "crm mail accepted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Quota-Account"), "and its header removed")
	mt.disconnect(conn)
	check(usage("strip-co", "total") == "1", "crm mail counted once")
end },
}
