# The security suite (tests/security/: one heap bug per program, run under several allocators).
#   make security          the table: caught / with a message / prevented / missed per allocator
#                          (EXTRA="NAME=PATH.so ...": other allocators too, e.g.
#                          EXTRA="mi3-secure=/work/baselines/mi3-secure/libmimalloc-secure.so")
#   make security-details  the same with every case's outcome
#   make security-update   rewrite tests/security/expected.txt, mapalloc's two rows that
#                          make test checks (tests/security/run.py --check)
SECURITY_LIBS := $(BUILD)/libmapalloc.so $(BUILD)/libmapalloc-secure.so
SECURITY_EXTRA = $(if $(EXTRA),--extra $(EXTRA))

.PHONY: security security-details security-update
security: $(SECURITY_LIBS)
	@tests/security/run.py $(SECURITY_EXTRA)

security-details: $(SECURITY_LIBS)
	@tests/security/run.py --details $(SECURITY_EXTRA)

security-update: $(SECURITY_LIBS)
	@tests/security/run.py --update tests/security/expected.txt
	@echo "tests/security/expected.txt rewritten: check git diff before committing"
