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

# The suite's cases that tests/unit_misuse.cpp runs (the same build as run.py's, which reuses
# them): $(BUILD)/security/<class>.<size>.
SECURITY_CASE_FLAGS := -std=c++17 -O0 -fno-builtin -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=0 -w
SECURITY_UNIT_CASES := sized-delete-wrong-size.8B=-DBUG_SIZED_DELETE@-DSIZE=8 \
  sized-delete-wrong-size.2MiB=-DBUG_SIZED_DELETE@-DSIZE=2097152 \
  new-then-delete-array.8B=-DBUG_NEW_DELETE_ARRAY@-DSIZE=8 \
  new-array-then-delete.4KiB=-DBUG_NEW_ARRAY_DELETE@-DSIZE=4096 \
  overflow-1MiB-direct.8B=-DBUG_OVERFLOW@-DBY=1048576@-DMEMCPY=0@-DSIZE=8 \
  underflow-1-direct.8B=-DBUG_UNDERFLOW@-DBY=1@-DMEMCPY=0@-DSIZE=8 \
  uaf-read.256KiB=-DBUG_UAF@-DACCESS=1@-DBETWEEN=0@-DSIZE=262144 \
  uaf-write-after-malloc.256KiB=-DBUG_UAF@-DACCESS=0@-DBETWEEN=1@-DSIZE=262144 \
  uaf-read.2MiB=-DBUG_UAF@-DACCESS=1@-DBETWEEN=0@-DSIZE=2097152 \
  uaf-write.256KiB=-DBUG_UAF@-DACCESS=0@-DBETWEEN=0@-DSIZE=262144 \
  uaf-zero-after-malloc.2MiB=-DBUG_UAF@-DACCESS=2@-DBETWEEN=1@-DSIZE=2097152 \
  underflow-1-direct.256KiB=-DBUG_UNDERFLOW@-DBY=1@-DMEMCPY=0@-DSIZE=262144 \
  underflow-32-direct.2MiB=-DBUG_UNDERFLOW@-DBY=32@-DMEMCPY=0@-DSIZE=2097152 \
  underflow-1MiB-direct.2MiB=-DBUG_UNDERFLOW@-DBY=1048576@-DMEMCPY=0@-DSIZE=2097152 \
  double-free-now.256KiB=-DBUG_DOUBLE_FREE_NOW@-DSIZE=262144 \
  zero-size-read=-DBUG_ZERO@-DACCESS=1@-DFREED=0 \
  zero-size-write-after-free=-DBUG_ZERO@-DACCESS=0@-DFREED=1
SECURITY_UNIT_BINARIES := $(foreach c,$(SECURITY_UNIT_CASES),$(BUILD)/security/$(firstword $(subst =, ,$(c))))
define security_case_rule
$(BUILD)/security/$(firstword $(subst =, ,$(1))): tests/security/bug.cpp
	@mkdir -p $$(dir $$@)
	g++ $(SECURITY_CASE_FLAGS) $(subst @, ,$(patsubst $(firstword $(subst =, ,$(1)))=%,%,$(1))) $$< -o $$@
endef
$(foreach c,$(SECURITY_UNIT_CASES),$(eval $(call security_case_rule,$(c))))
$(BUILD)/tests/unit $(BUILD)/tests/unit-secure: $(SECURITY_UNIT_BINARIES)
