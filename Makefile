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

$(B)/%.o: src/%.c | $(B)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -MMD -MP -c $< -o $@

$(B)/dvcgw: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(PKGLIBS) -lm

$(B)/unit_%: tests/unit_%.c $(LIBOBJS)
	$(CC) $(WARN) $(CFLAGS) $(PKGCFLAGS) -Isrc -MMD -MP -o $@ $< $(LIBOBJS) $(LDFLAGS) $(PKGLIBS) -lm

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

-include $(OBJS:.o=.d) $(UNITS:=.d)
