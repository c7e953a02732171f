# make install / make uninstall, included by the Makefile (`include scripts/install.mk`).
# Refers only to BUILD, PREFIX, DESTDIR and CC; PREFIX defaults to /usr/local, DESTDIR (a
# staging root for packagers) to nothing.
#
# What goes where:
#   $(PREFIX)/lib/libmapalloc{,-secure}.{so,a}, libmapalloc-prefixed.a   the libraries
#   $(PREFIX)/lib/libmapalloc-trace.so                    the tracing library (mapalloc record)
#   $(PREFIX)/include/mapalloc.h                                          the header
#   $(PREFIX)/lib/pkgconfig/mapalloc.pc        from scripts/mapalloc.pc.in, prefix and version
#   $(PREFIX)/bin/mapalloc                                                the command
#   $(PREFIX)/lib/mapalloc/   its private files: the mapalloc_*.py modules, bench.py (the
#                             measuring engine they import), the compiled measure helper and
#                             the trace tools (replay, trace-info)
# The command finds its modules through ../lib/mapalloc relative to itself, and the libraries
# through ../lib, so a DESTDIR-staged tree works once moved into place.

PREFIX ?= /usr/local

MAPALLOC_INSTALL_LIB := $(DESTDIR)$(PREFIX)/lib
MAPALLOC_INSTALL_PRIVATE := $(DESTDIR)$(PREFIX)/lib/mapalloc
MAPALLOC_INSTALL_MODULES = $(wildcard scripts/mapalloc_*.py) scripts/bench.py

.PHONY: install uninstall

# The helper that times a program and reads its peak RSS (make bench compiles the same file).
$(BUILD)/bench/measure: scripts/bench/measure.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -o $@ $<

install: all $(BUILD)/bench/measure
	install -d $(MAPALLOC_INSTALL_LIB)/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/bin $(MAPALLOC_INSTALL_PRIVATE)
	install -m 755 $(BUILD)/libmapalloc.so $(BUILD)/libmapalloc-secure.so \
	  $(BUILD)/libmapalloc-trace.so $(MAPALLOC_INSTALL_LIB)/
	install -m 644 $(BUILD)/libmapalloc.a $(BUILD)/libmapalloc-secure.a \
	  $(BUILD)/libmapalloc-prefixed.a $(MAPALLOC_INSTALL_LIB)/
	install -m 644 include/mapalloc.h $(DESTDIR)$(PREFIX)/include/
	version=$$(awk '/^#define MAPALLOC_VERSION_(MAJOR|MINOR|PATCH) / \
	    { v = v s $$3; s = "." } END { print v }' include/mapalloc.h); \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e "s|@VERSION@|$$version|g" scripts/mapalloc.pc.in \
	    > $(MAPALLOC_INSTALL_LIB)/pkgconfig/mapalloc.pc
	install -m 755 scripts/mapalloc $(DESTDIR)$(PREFIX)/bin/mapalloc
	install -m 644 $(MAPALLOC_INSTALL_MODULES) $(MAPALLOC_INSTALL_PRIVATE)/
	install -m 755 $(BUILD)/bench/measure $(BUILD)/replay $(BUILD)/trace-info \
	  $(MAPALLOC_INSTALL_PRIVATE)/

# The private directory goes whole (it holds nothing of anyone else's); the shared directories
# (bin, lib, include, lib/pkgconfig) stay, even when empty.
uninstall:
	rm -f $(MAPALLOC_INSTALL_LIB)/libmapalloc.so $(MAPALLOC_INSTALL_LIB)/libmapalloc-secure.so \
	  $(MAPALLOC_INSTALL_LIB)/libmapalloc-trace.so \
	  $(MAPALLOC_INSTALL_LIB)/libmapalloc.a $(MAPALLOC_INSTALL_LIB)/libmapalloc-secure.a \
	  $(MAPALLOC_INSTALL_LIB)/libmapalloc-prefixed.a $(DESTDIR)$(PREFIX)/include/mapalloc.h \
	  $(MAPALLOC_INSTALL_LIB)/pkgconfig/mapalloc.pc $(DESTDIR)$(PREFIX)/bin/mapalloc
	rm -rf $(MAPALLOC_INSTALL_PRIVATE)
