# zcd: one hand-written Makefile, pattern rules and pkg-config.
# `make` builds everything into build/; see README.md for the other targets.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
PYTHON   := /usr/bin/python3
PKGS     := libzmq libczmq msgpack jansson libseccomp liburing libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
SHIM_LIBS  ?= -lseccomp
# The shim is linked statically (no loader, no whole libc mapped): its RSS
# stays under 1 MiB.  Sanitizer builds cannot link statically.
SHIM_STATIC ?= $(if $(SAN),,-static)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) $(SAN) -fPIC -I. -D_GNU_SOURCE $(PKG_CFLAGS)
LDFLAGS  ?=
ALL_LDFLAGS = $(LDFLAGS) $(SAN)

CORE_SRC   := $(wildcard core/*.c)
ACTOR_SRC  := $(wildcard actors/*.c)
SHIM_SRC   := $(wildcard shim/*.c)
LIB_SRC    := $(wildcard lib/*.c)
ZCTR_SRC   := $(wildcard tools/zctr/*.c)
ZCD_OCI_SRC := $(wildcard tools/zcd-oci/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
BENCH_SRC  := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

CORE_OBJ  := $(call obj,$(CORE_SRC))
ACTOR_OBJ := $(call obj,$(ACTOR_SRC))
SHIM_OBJ  := $(call obj,$(SHIM_SRC))
LIB_OBJ   := $(call obj,$(LIB_SRC))
ZCTR_OBJ  := $(call obj,$(ZCTR_SRC))
ZCD_OCI_OBJ := $(call obj,$(ZCD_OCI_SRC))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

# Objects built through pattern rules are kept (no rebuild on every make).
.SECONDARY:

.PHONY: all deps test unit integration demo bench plots bench-peers install clean asan \
        format fuzz fuzz-protocol schema schema-check soak hugetlb asan-integration
all: $(BUILD)/zcd $(BUILD)/zcd-shim $(BUILD)/zctr $(BUILD)/libzcd.a $(BUILD)/libzcd.so \
     $(BUILD)/zcd-oci \
     $(UNIT_BINS) $(BENCH_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libzcdcore.a: $(CORE_OBJ) $(ACTOR_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/zcd: $(call obj,tools/zcd.c tools/zcd_statedir.c) $(BUILD)/libzcdcore.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# The shim links libc and libseccomp only: it is multiplied by the number of
# processes, so it carries no ZeroMQ, msgpack or JSON.
SHIM_CORE_OBJ := $(call obj,core/fsutil.c core/err.c core/logtail.c)
$(BUILD)/zcd-shim: $(SHIM_OBJ) $(SHIM_CORE_OBJ)
	$(CC) $(ALL_LDFLAGS) $(SHIM_STATIC) -o $@ $^ $(SHIM_LIBS)

# libzcd reads msgpack with the daemon's reader (core/mp.c, which reports
# through core/err.c): one reader, hardened once.
LIB_CORE_OBJ := $(call obj,core/mp.c core/err.c)
$(BUILD)/libzcd.a: $(LIB_OBJ) $(LIB_CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libzcd.so: $(LIB_OBJ) $(LIB_CORE_OBJ)
	$(CC) $(ALL_LDFLAGS) -shared -o $@ $^ $(PKG_LIBS)

$(BUILD)/zctr: $(ZCTR_OBJ) $(BUILD)/libzcd.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# zcd-oci: runc's command line over zcd (Slurm's oci.conf calls it).
$(BUILD)/zcd-oci: $(ZCD_OCI_OBJ) $(BUILD)/libzcd.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(BUILD)/libzcdcore.a $(BUILD)/libzcd.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka -lm

# test_actors drives the daemon's actors with a fake shim and a fake runtime
# (tests/fakeshim/): no runc, crun or root.  Not named test_*, which
# tests/run-unit would run; order-only, so they stay out of the link.  The
# harness (the daemon in a thread, and its client) is linked in.
FAKE_BINS := $(BUILD)/tests/fakeshim $(BUILD)/tests/fakeruntime
$(BUILD)/tests/fakeshim: $(call obj,tests/fakeshim/fakeshim.c)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^

$(BUILD)/tests/fakeruntime: tests/fakeshim/fakeruntime
	@mkdir -p $(dir $@)
	cp $< $@ && chmod 0755 $@

HARNESS_OBJ := $(call obj,tests/fakeshim/harness.c tests/fakeshim/harness_wire.c)
$(BUILD)/tests/test_actors: $(call obj,tests/unit/test_actors.c) $(HARNESS_OBJ) \
                            $(BUILD)/libzcdcore.a $(BUILD)/libzcd.a | $(FAKE_BINS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka -lm

$(BUILD)/bench/%: $(call obj,bench/%.c) $(BUILD)/libzcdcore.a $(BUILD)/libzcd.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# memhold runs inside the bench's busybox rootfs (no libc there): static,
# without the sanitizers (they cannot link statically) or the zcd libraries.
$(BUILD)/bench/memhold: bench/memhold.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 $(WARN) $(CFLAGS) -static -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

deps:
	@sh tools/install-deps.sh

# crun 1.8 refuses hybrid cgroup hosts while hugetlb sits on the cgroup2
# mount; a v1 hugetlb hierarchy is what systemd sets up on such hosts.
hugetlb:
	@sh tools/mount-hugetlb.sh

unit: all
	@sh tests/run-unit

integration: all hugetlb
	@sh tests/run-integration

# These first install what is missing, then build in a fresh make: the
# pkg-config flags above are read when make starts, before `deps` ran.
test: deps
	@$(MAKE) --no-print-directory all hugetlb schema-check
	@sh tests/run-unit
	@sh tests/run-integration
	@if command -v slurmctld >/dev/null 2>&1; then sh tests/slurm/run; fi

# The Slurm 22.05 cluster test (tests/slurm/): three nodes in network
# namespaces, each with its own slurmd and zcd; srun --container via zcd-oci.
.PHONY: test-slurm
test-slurm: deps
	@$(MAKE) --no-print-directory all hugetlb
	@sh tests/slurm/run

demo: deps
	@$(MAKE) --no-print-directory all hugetlb
	@sh tools/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all hugetlb
	@sh bench/run --json $(BUILD)/bench.json

# Redraws docs/bench/*.svg from a saved bench/run JSON (default: the one
# the committed plots came from) without measuring again.
plots:
	@$(PYTHON) bench/plot.py --json $(or $(JSON),docs/bench/plots.json) --out docs/bench

bench-peers: deps
	@$(MAKE) --no-print-directory all hugetlb
	@sh bench/peers

soak: deps
	@$(MAKE) --no-print-directory all hugetlb
	@sh tests/soak.sh

schema:
	$(PYTHON) schema/gen.py

schema-check:
	@$(PYTHON) schema/gen.py --check

# Manual pages: $(BUILD)/man/zctr.1, zcd-protocol.7, zcd.8, zcd-shim.8,
# zcd-oci.8.  The programs' pages are scdoc (docs/man/*.scd); zcd-protocol(7)
# is docs/protocol.md itself, reshaped by a pandoc filter, so the protocol
# keeps one description.  scdoc and pandoc come with `make deps`.
MAN_PAGES := $(patsubst docs/man/%.scd,$(BUILD)/man/%,$(wildcard docs/man/*.scd)) \
             $(BUILD)/man/zcd-protocol.7
.PHONY: man
man: $(MAN_PAGES)
all: man

$(BUILD)/man/%: docs/man/%.scd
	@mkdir -p $(dir $@)
	scdoc < $< > $@.tmp && mv $@.tmp $@

$(BUILD)/man/zcd-protocol.7: docs/protocol.md docs/man/zcd-protocol.lua
	@mkdir -p $(dir $@)
	pandoc -f gfm -t man -s --lua-filter docs/man/zcd-protocol.lua -M title=ZCD-PROTOCOL \
	  -M section=7 -M footer=zcd -M hyphenate=false -V adjusting=l -o $@.tmp $< && mv $@.tmp $@

asan:
	$(MAKE) BUILD=build-asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-O1 -g" all
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 sh tests/run-unit

# The integration suite against the sanitized daemon: LeakSanitizer makes
# the daemon's exit fail on any leak, which the suite's teardown reports.
asan-integration:
	$(MAKE) BUILD=build-asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-O1 -g" all
	@ZCD_BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  sh tests/run-integration

fuzz:
	@sh tests/fuzz/run.sh $(or $(FUZZ_S),60)

# The stateful protocol fuzzer against a real daemon (runc, then crun) for
# FUZZ_S seconds (default 120); FUZZ_SEED=N replays a seed, FUZZ_RUNTIME=runc|crun.
fuzz-protocol: all hugetlb
	@$(PYTHON) tests/fuzz/protocol_fuzz.py --build $(BUILD) --seconds $(or $(FUZZ_S),120) \
	  --runtime $(or $(FUZZ_RUNTIME),both) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# The daemon and its shim go to sbin (zcd runs the zcd-shim beside its own
# binary), the clients to bin, and the man pages; zctr's bash completion
# when the tree has it.  INSTALL_SHARED=no leaves out
# libzcd.so (the Debian package, tools/deb/, ships the static library).
SBINDIR    ?= $(PREFIX)/sbin
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
INSTALL_SHARED ?= yes
INSTALLED := $(BUILD)/zcd $(BUILD)/zcd-shim $(BUILD)/zctr $(BUILD)/zcd-oci $(BUILD)/libzcd.a \
             $(if $(filter yes,$(INSTALL_SHARED)),$(BUILD)/libzcd.so)
.PHONY: installable
installable: $(INSTALLED)

install: $(INSTALLED) man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)
	install -m 0755 $(BUILD)/zcd $(BUILD)/zcd-shim $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(BUILD)/zctr $(BUILD)/zcd-oci $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/libzcd.a $(DESTDIR)$(LIBDIR)/
	$(if $(filter yes,$(INSTALL_SHARED)),install -m 0755 $(BUILD)/libzcd.so $(DESTDIR)$(LIBDIR)/)
	install -m 0644 lib/zcd_client.h $(DESTDIR)$(INCLUDEDIR)/
	@for page in $(BUILD)/man/*.[1-8]; do \
	  [ -f "$$page" ] || continue; \
	  dir=$(DESTDIR)$(MANDIR)/man$${page##*.}; \
	  echo "install -m 0644 $$page $$dir/"; \
	  install -d "$$dir" && install -m 0644 "$$page" "$$dir/" || exit 1; \
	done
	if [ -f tools/zctr/zctr.bash ]; then \
	  install -d $(DESTDIR)$(BASHCOMPDIR) && \
	  install -m 0644 tools/zctr/zctr.bash $(DESTDIR)$(BASHCOMPDIR)/zctr; fi

# The Debian package: $(BUILD)/deb/zcd_<version>_<arch>.deb, built by
# dpkg-buildpackage from a clean copy of the tree (tools/deb/build.sh) and
# checked by lintian, whose errors fail the target.
.PHONY: deb test-deb
deb:
	@sh tools/deb/build.sh $(BUILD)

# Installs that package, runs its daemon as the systemd unit would, drives
# it with the installed zctr across a daemon restart, then purges it.
test-deb: deps
	@$(MAKE) --no-print-directory deb
	@sh tests/deb/run $(BUILD)

clean:
	rm -rf build build-asan build-fuzz
