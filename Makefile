# quota-milter - monthly plan quotas for outgoing mail, as a milter
#
#   make run      install what is missing, build, run on the shipped conf
#   make check    install what is missing, build, run every test (also
#                 under AddressSanitizer + UndefinedBehaviorSanitizer)
#   make bench    build, then measure throughput through a throwaway Postfix
#                 and alone, Redis use, memory; writes bench/RESULTS.md
#   make demo     a plan filling up: Redis, Postfix and the milter on loopback
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
QM_LIBS	= -lmilter $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lhiredis -lconfuse) -pthread
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lm -lrt)

ALL_CFLAGS = $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(CFLAGS)

LIB_SRCS = conf/cidr.c conf/conf.c \
	counters/month.c counters/keys.c counters/redis.c counters/counters.c \
	counters/journal.c \
	milter/policy.c milter/log.c
LIB_OBJS = $(LIB_SRCS:%.c=$(B)/%.o)

DAEMON	= $(B)/quota-milter
CTL	= $(B)/quota-milter-ctl
CTL_OBJS = $(B)/ctl/quota-milter-ctl.o $(B)/ctl/row.o $(B)/ctl/scan.o $(B)/ctl/output.o
UNIT_TESTS = $(B)/tests/check_conf $(B)/tests/check_month $(B)/tests/check_policy
REDIS_TESTS = $(B)/tests/check_counters
TEST_HELPERS = $(B)/tests/redis_helper.o
MILTERLOAD = $(B)/tests/bench/milterload

.SECONDARY:
.PHONY: all run check check-unit check-asan test-run install clean deps bench demo
all: $(DAEMON) $(CTL) $(UNIT_TESTS) $(REDIS_TESTS) $(MILTERLOAD)

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

$(DAEMON): $(B)/milter/quota-milter.o $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(QM_LIBS)

$(CTL): $(CTL_OBJS) $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(filter-out -lmilter,$(QM_LIBS))

$(B)/tests/check_%: $(B)/tests/check_%.o $(TEST_HELPERS) $(B)/libqm.a
	$(CC) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(QM_LIBS)

# The benchmark's milter-protocol load generator (no libraries of ours).
$(MILTERLOAD): tests/bench/milterload.c
	@mkdir -p $(@D)
	$(CC) $(QM_CPPFLAGS) $(CPPFLAGS) $(QM_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -pthread

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

# bench: a few minutes; the table goes to bench/RESULTS.md (see tests/bench/bench.sh).
bench: deps
	$(MAKE) all
	bash tests/bench/bench.sh $(B)

demo: deps
	$(MAKE) all
	bash tests/demo.sh $(B)

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
	install -m 644 conf/quota-milter.conf $(DESTDIR)$(SYSCONFDIR)/quota-milter/quota-milter.conf

clean:
	rm -rf build build-asan counters/quota_lua.h

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
