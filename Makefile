# dvcgw — see README.md. `make` builds build/dvcgw; `make run`, `make test`, `make bench`.
PKGS    := libevent hiredis jansson libsodium libcurl
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wwrite-strings -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif
PKGCFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKGLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

B       := build
SRCS    := $(wildcard src/*.c)
LIBSRCS := $(filter-out src/main.c,$(SRCS))
OBJS    := $(SRCS:src/%.c=$(B)/%.o)
LIBOBJS := $(LIBSRCS:src/%.c=$(B)/%.o)
UNITS   := $(patsubst tests/%.c,$(B)/%,$(wildcard tests/unit_*.c))

.PHONY: all deps run test bench clean units
all: $(B)/dvcgw

# Objects depend on the flags they were built with: switching SANITIZE or CC rebuilds, never links a
# mix of instrumented and plain objects.
FLAGS_STAMP := $(B)/.flags
FLAGS_NOW   := $(CC) $(WARN) $(CFLAGS) $(LDFLAGS)
$(shell mkdir -p $(B) && { [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || \
    echo '$(FLAGS_NOW)' > $(FLAGS_STAMP); })

$(B)/%.o: src/%.c $(FLAGS_STAMP) | $(B)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -MMD -MP -c $< -o $@

$(B)/dvcgw: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(PKGLIBS) -lm -pthread

$(B)/unit_%: tests/unit_%.c $(LIBOBJS) $(FLAGS_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -Isrc -MMD -MP -o $@ $< $(LIBOBJS) $(LDFLAGS) $(PKGLIBS) -lm -pthread

units: $(UNITS)

$(B):
	mkdir -p $(B)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

test: deps
	@$(MAKE) --no-print-directory all units
	@tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

clean:
	rm -rf $(B)

# ---- fuzz targets -------------------------------------------------------------------------------
# tests/fuzz_X.c is a libFuzzer target; its corpus tests/corpus/X/ is a regression test. `make units`
# builds $(B)/fuzz_X with the normal compiler and tests/fuzz_main.c as main() (it runs each corpus
# file once: `build/fuzz_X tests/corpus/X`). `make fuzz` builds the libFuzzer versions with clang
# into $(B)/fuzz/ and runs each for FUZZ_SECONDS, writing finds to $(B)/fuzz/corpus/X and crashes to
# $(B)/fuzz/crash/. To keep the finds that reach new code (and the corpus small), into a copy D of
# tests/corpus/X:  $(B)/fuzz/fuzz_X -merge=1 -use_counters=0 D $(B)/fuzz/corpus/X
FUZZERS      := $(patsubst tests/%.c,$(B)/%,$(filter-out tests/fuzz_main.c,$(wildcard tests/fuzz_*.c)))
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_MAXLEN  ?= 2048
FUZZ_B       := $(B)/fuzz
FUZZ_SAN     := address,undefined
FUZZ_CFLAGS  := -O1 -g -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OBJS    := $(LIBSRCS:src/%.c=$(FUZZ_B)/obj/%.o)
FUZZ_BINS    := $(patsubst $(B)/%,$(FUZZ_B)/%,$(FUZZERS))

.PHONY: fuzz
.SECONDARY: $(FUZZ_OBJS)
units: $(FUZZERS)

$(B)/fuzz_%: tests/fuzz_%.c tests/fuzz_main.c tests/fuzz.h $(LIBOBJS) $(wildcard src/*.h) $(FLAGS_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -Isrc -o $@ $< tests/fuzz_main.c $(LIBOBJS) $(LDFLAGS) \
	    $(PKGLIBS) -lm -pthread

# fuzz_http drives the real server and handlers with Redis stubbed (tests/rds_stub.c).
HTTP_FUZZ_OBJS := $(filter-out $(B)/rds.o,$(LIBOBJS))
$(B)/fuzz_http: tests/fuzz_http.c tests/rds_stub.c tests/rds_stub.h tests/fuzz_main.c tests/fuzz.h \
    $(HTTP_FUZZ_OBJS) $(wildcard src/*.h) $(FLAGS_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -Isrc -o $@ tests/fuzz_http.c tests/rds_stub.c \
	    tests/fuzz_main.c $(HTTP_FUZZ_OBJS) $(LDFLAGS) $(PKGLIBS) -lm -pthread

$(FUZZ_B)/fuzz_http: tests/fuzz_http.c tests/rds_stub.c tests/fuzz.h \
    $(filter-out $(FUZZ_B)/obj/rds.o,$(FUZZ_OBJS))
	$(FUZZ_CC) $(WARN) $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) $(PKGCFLAGS) -Isrc -o $@ \
	    tests/fuzz_http.c tests/rds_stub.c $(filter-out $(FUZZ_B)/obj/rds.o,$(FUZZ_OBJS)) \
	    $(PKGLIBS) -lm -pthread

$(FUZZ_B)/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(WARN) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,$(FUZZ_SAN) $(PKGCFLAGS) -c $< -o $@

$(FUZZ_B)/fuzz_%: tests/fuzz_%.c tests/fuzz.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(WARN) $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) $(PKGCFLAGS) -Isrc -o $@ $< \
	    $(FUZZ_OBJS) $(PKGLIBS) -lm -pthread

fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do \
		t=$${f##*/fuzz_}; mkdir -p $(FUZZ_B)/corpus/$$t $(FUZZ_B)/crash; \
		echo "fuzz_$$t: $(FUZZ_SECONDS) s on tests/corpus/$$t"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAXLEN) -print_final_stats=1 \
		    -artifact_prefix=$(FUZZ_B)/crash/$$t- $(FUZZ_B)/corpus/$$t tests/corpus/$$t \
		    2>$(FUZZ_B)/$$t.log || { tail -n 60 $(FUZZ_B)/$$t.log; exit 1; }; \
		grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units|stat::new_units_added' \
		    $(FUZZ_B)/$$t.log; \
	done
# ---- end of fuzz targets ------------------------------------------------------------------------

# ---- install ------------------------------------------------------------------------------------
# make install PREFIX=/usr/local DESTDIR=: the binary, the flows, the console's files, the man page,
# the systemd unit (and a sysusers.d entry for its user) under $(DESTDIR)$(PREFIX), and a sample
# config in $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json unless one is there already. `make uninstall`
# removes what install put there except the config (it is the operator's by then).
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     := $(PREFIX)/bin
DATADIR    := $(PREFIX)/share
MANDIR     := $(DATADIR)/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
INSTALL    ?= install
FLOW_FILES    := $(notdir $(wildcard flows/*))
CONSOLE_FILES := $(notdir $(wildcard console/*))
# The binary to install; tests/test_install.py installs the one the suite runs.
INSTALL_BIN ?= $(B)/dvcgw
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DATADIR@|$(DATADIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

.PHONY: install uninstall
install: $(INSTALL_BIN)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/dvcgw/flows \
	    $(DESTDIR)$(DATADIR)/dvcgw/console $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR)
	$(INSTALL) -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/dvcgw
	$(INSTALL) -m 0644 $(addprefix flows/,$(FLOW_FILES)) $(DESTDIR)$(DATADIR)/dvcgw/flows/
	$(INSTALL) -m 0644 $(addprefix console/,$(CONSOLE_FILES)) $(DESTDIR)$(DATADIR)/dvcgw/console/
	$(INSTALL) -m 0644 docs/dvcgw.8 $(DESTDIR)$(MANDIR)/man8/dvcgw.8
	$(SUBST) config/dvcgw.service.in > $(DESTDIR)$(UNITDIR)/dvcgw.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dvcgw.service
	$(INSTALL) -m 0644 config/dvcgw.sysusers $(DESTDIR)$(SYSUSERSDIR)/dvcgw.conf
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json ]; then \
		echo "install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json"; \
	else \
		$(INSTALL) -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/dvcgw && \
		$(SUBST) config/dvcgw.sample.json.in > $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json && \
		chmod 0640 $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json; \
	fi
	@# A real install (no DESTDIR) as root: the service's user, and its group on the config.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		getent passwd dvcgw >/dev/null || useradd --system --user-group --home-dir /var/lib/dvcgw \
		    --no-create-home --shell /usr/sbin/nologin dvcgw; \
		chgrp dvcgw $(SYSCONFDIR)/dvcgw $(SYSCONFDIR)/dvcgw/dvcgw.json; \
		command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dvcgw $(DESTDIR)$(MANDIR)/man8/dvcgw.8 \
	    $(DESTDIR)$(UNITDIR)/dvcgw.service $(DESTDIR)$(SYSUSERSDIR)/dvcgw.conf
	rm -f $(addprefix $(DESTDIR)$(DATADIR)/dvcgw/flows/,$(FLOW_FILES)) \
	    $(addprefix $(DESTDIR)$(DATADIR)/dvcgw/console/,$(CONSOLE_FILES))
	rmdir $(DESTDIR)$(DATADIR)/dvcgw/flows $(DESTDIR)$(DATADIR)/dvcgw/console \
	    $(DESTDIR)$(DATADIR)/dvcgw 2>/dev/null || true
	@echo "uninstall: $(DESTDIR)$(SYSCONFDIR)/dvcgw/dvcgw.json is left in place"
# ---- end of install -----------------------------------------------------------------------------

-include $(OBJS:.o=.d) $(UNITS:=.d)
