# quota-milter - monthly plan quotas for outgoing mail, as a milter
#
#   make run      install what is missing, build, run on the shipped conf
#   make check    install what is missing, build, run every test (also
#                 under AddressSanitizer + UndefinedBehaviorSanitizer)
#   make bench    build, then measure throughput through a throwaway Postfix
#                 and alone, Redis use, memory; writes bench/RESULTS.md
#   make demo     a plan filling up: Redis, Postfix and the milter on loopback
#   make check-hiredis1  build with hiredis 1.x (fetched from Debian trixie,
#                 not installed) and run the Redis tests against it
#   make install  DESTDIR=... PREFIX=...
#
# Honours CC, CFLAGS, CPPFLAGS, LDFLAGS, DESTDIR and PREFIX. Objects go to
# $(B) (default build/), so a sanitizer build can sit beside the normal one.

PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
BINDIR	?= $(PREFIX)/bin
MANDIR	?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
B	?= build

CC	?= cc
CFLAGS	?= -O2 -g
WERROR	?= -Werror
PKGS	= hiredis libconfuse
QM_CPPFLAGS = -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
QM_CFLAGS = -std=c11 -Wall -Wextra $(WERROR) -pthread
QM_LIBS	= $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lhiredis -lconfuse) -pthread
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lm -lrt)

ALL_CFLAGS = $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(CFLAGS)

LIB_SRCS = conf/cidr.c conf/conf.c \
	counters/month.c counters/keys.c counters/redis.c counters/counters.c \
	counters/journal.c counters/inflight.c counters/cache.c \
	milter/policy.c milter/log.c milter/stats.c
LIB_OBJS = $(LIB_SRCS:%.c=$(B)/%.o)

DAEMON	= $(B)/quota-milter
CTL	= $(B)/quota-milter-ctl
CTL_OBJS = $(B)/ctl/quota-milter-ctl.o $(B)/ctl/row.o $(B)/ctl/scan.o $(B)/ctl/output.o \
	$(B)/ctl/fleet.o
UNIT_TESTS = $(B)/tests/check_conf $(B)/tests/check_month $(B)/tests/check_policy \
	$(B)/tests/check_stats
REDIS_TESTS = $(B)/tests/check_counters
TEST_HELPERS = $(B)/tests/redis_helper.o
MILTERLOAD = $(B)/tests/bench/milterload
NULLMILTER = $(B)/tests/bench/nullmilter

.SECONDARY:
.PHONY: all run check check-unit check-asan check-hiredis1 test-run install clean deps bench demo fuzz fuzz-build fuzz-clean
all: $(DAEMON) $(CTL) $(UNIT_TESTS) $(REDIS_TESTS) $(MILTERLOAD) $(NULLMILTER)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -MMD -MP -c -o $@ $<

# The Lua script is compiled into the binary from counters/quota.lua.
counters/quota_lua.h: counters/quota.lua
	{ echo '/* generated from counters/quota.lua by make; do not edit */'; \
	  echo 'static const char quota_lua[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@
$(B)/counters/counters.o $(B)/tests/check_counters.o: counters/quota_lua.h

$(B)/libqm.a: $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

DAEMON_OBJS = $(B)/milter/daemon.o $(B)/milter/callbacks.o

$(DAEMON): $(DAEMON_OBJS) $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lmilter $(QM_LIBS)

$(CTL): $(CTL_OBJS) $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(QM_LIBS)

$(B)/tests/check_%: $(B)/tests/check_%.o $(TEST_HELPERS) $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(QM_LIBS)

# The benchmark's milter-protocol load generator (no libraries of ours).
$(MILTERLOAD): tests/bench/milterload.c
	@mkdir -p $(@D)
	$(CC) $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -pthread

# The benchmark's null libmilter milter: the ceiling for any libmilter milter.
$(NULLMILTER): tests/bench/nullmilter.c
	@mkdir -p $(@D)
	$(CC) $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -lmilter -pthread

deps:
	@sh tests/deps.sh

run: deps
	$(MAKE) $(DAEMON)
	sh tests/run-local.sh $(DAEMON) conf/quota-milter.conf

# check: the whole suite, then again built with ASan+UBSan.
check: deps
	$(MAKE) all
	$(MAKE) check-asan
	bash tests/run.sh $(B)

# bench: about 20 minutes; the table goes to bench/RESULTS.md (see tests/bench/bench.sh).
# It first installs the peers it compares with (rspamd, postfwd) from Debian,
# their system services left stopped (tests/bench/peers.sh); check does not.
# Peers that could not be installed are errors of the bench, in its table.
bench: deps
	$(MAKE) all
	sh tests/bench/peers.sh || echo "make bench: the peers could not be installed" >&2
	bash tests/bench/bench.sh $(B)

demo: deps
	$(MAKE) all
	bash tests/demo.sh $(B)

# check-hiredis1: the same code built with hiredis 1.x (from Debian's next
# release, unpacked, not installed) and its Redis tests run; not part of check.
check-hiredis1: deps
	bash tests/hiredis1.sh

check-asan:
	$(MAKE) B=build-asan CC=$(or $(ASAN_CC),$(CC)) \
		CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
		LDFLAGS="-fsanitize=address,undefined" all

install: $(DAEMON) $(CTL)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/quota-milter
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 755 $(DAEMON) $(DESTDIR)$(SBINDIR)/quota-milter
	install -m 755 $(CTL) $(DESTDIR)$(SBINDIR)/quota-milter-ctl
	install -m 644 man/quota-milter.8 man/quota-milter-ctl.8 $(DESTDIR)$(MANDIR)/man8
	install -m 644 man/quota-milter.conf.5 $(DESTDIR)$(MANDIR)/man5
	@# The conf may hold a Redis password: 0640, group quota-milter where that
	@# group exists (not in a DESTDIR); an existing conf is never overwritten.
	@conf=$(DESTDIR)$(SYSCONFDIR)/quota-milter/quota-milter.conf; \
	if [ -e "$$conf" ]; then \
		echo "install: $$conf exists, kept (the new one is conf/quota-milter.conf)"; \
	else \
		group=; [ -z "$(DESTDIR)" ] && getent group quota-milter >/dev/null && group="-g quota-milter"; \
		echo "install -m 640 $$group conf/quota-milter.conf $$conf"; \
		install -m 640 $$group conf/quota-milter.conf "$$conf"; \
	fi

clean:
	rm -rf build build-asan build-hiredis1 counters/quota_lua.h

# deb: the Debian package (debian/), built by `dpkg-buildpackage -us -uc -b`
# in a scratch copy of the files git tracks or would track (committed or
# not; ignored ones such as build/ left out), so that it builds what a clean
# clone would. The .deb files end in $(DEB_OUT). Needs dpkg-dev, debhelper
# and the Build-Depends of debian/control.
DEB_OUT	?= build/deb
.PHONY: deb
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
		{ echo "make deb: needs dpkg-dev and debhelper (apt-get install dpkg-dev debhelper)" >&2; exit 1; }
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/quota-milter"; \
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git ls-files -z --cached --others --exclude-standard | \
		xargs -0 -r sh -c 'for f; do [ -e "$$f" ] && printf "%s\000" "$$f"; done; :' sh | \
		tar --null --verbatim-files-from -T - -cf - | tar -C "$$tmp/quota-milter" -xf -; \
	else \
		tar --exclude=./build --exclude=./build-asan -cf - . | tar -C "$$tmp/quota-milter" -xf -; \
	fi; \
	(cd "$$tmp/quota-milter" && dpkg-buildpackage -us -uc -b); \
	mkdir -p $(DEB_OUT); \
	mv "$$tmp"/*.deb "$$tmp"/*.buildinfo "$$tmp"/*.changes $(DEB_OUT)/; \
	ls -l $(DEB_OUT)/*.deb

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# fuzz: libFuzzer targets (tests/fuzz/), built with clang into $(FUZZ_B)
# with ASan+UBSan, each run for FUZZ_SECONDS on a copy of its seed corpus
# in $(FUZZ_B)/corpus/ (what it finds stays there, not in the repo); a
# crash, leak or broken invariant leaves its input in $(FUZZ_B)/artifacts/.
# fuzz-build only builds (tests/t_fuzz.sh uses it).
FUZZ_CC	?= clang
FUZZ_B	?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS ?= -O1 -g -fno-omit-frame-pointer
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS = fuzz_conf fuzz_classify fuzz_account fuzz_reply
FUZZ_LIB_SRCS = conf/cidr.c conf/conf.c milter/policy.c counters/keys.c \
	counters/month.c counters/journal.c
FUZZ_LIB_OBJS = $(FUZZ_LIB_SRCS:%.c=$(FUZZ_B)/%.o)
FUZZ_LIBS = $(shell pkg-config --libs libconfuse 2>/dev/null || echo -lconfuse) -pthread

$(FUZZ_B)/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(FUZZ_CFLAGS) $(FUZZ_SAN) \
		-fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(FUZZ_B)/fuzz_%: $(FUZZ_B)/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS)

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_B)/%)

fuzz: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_B)/corpus/$$t $(FUZZ_B)/artifacts; \
		cp tests/fuzz/corpus/$$t/* $(FUZZ_B)/corpus/$$t/; \
		echo "== $$t: $(FUZZ_SECONDS) s"; \
		$(FUZZ_B)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_B)/artifacts/$$t- $(FUZZ_B)/corpus/$$t \
			2>$(FUZZ_B)/$$t.log || { rc=1; echo "FAIL $$t:"; \
			grep -E -A14 'ERROR: |invariant failed|runtime error:' $(FUZZ_B)/$$t.log | \
			grep -v -E 'fuzzer::|libc|pthread_kill|raise\.c|abort\.c|_start|stat::' | head -30; }; \
		grep -E '^stat::(number_of_executed_units|peak_rss_mb)' $(FUZZ_B)/$$t.log; \
	done; \
	ls $(FUZZ_B)/artifacts/ 2>/dev/null | sed 's|^|artifact: $(FUZZ_B)/artifacts/|'; \
	exit $$rc

fuzz-clean:
	rm -rf $(FUZZ_B)
clean: fuzz-clean

-include $(shell find $(FUZZ_B) -name '*.d' 2>/dev/null)
