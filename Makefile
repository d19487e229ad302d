# pgstow. The one test command is `make test`: it installs what the tests
# need into .cache/ (scripts/install-deps.sh), vets, lints and runs every
# test, including the integration tests against PostgreSQL 15, 17 and 18.
# PGSTOW_TEST_MAJORS=15,18 limits the majors (see integration/pgtest).

GO          ?= go
STATICCHECK := .cache/bin/staticcheck
FUZZTIME    ?= 10s
# lz4cgo compresses with the system's liblz4 (about twice as fast as the
# pure-Go encoder; docs/tuning.md) when its headers are installed
# (liblz4-dev; make deps installs it). TAGS= builds the pure-Go encoder.
TAGS        ?= $(shell printf '\043include <lz4frame.h>\n' | $${CC:-cc} -E - >/dev/null 2>&1 && echo lz4cgo)

.PHONY: test deps vet lint build demo fuzz-short

test:
	bash scripts/install-deps.sh
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(if $(TAGS),$(GO) vet -tags '$(TAGS)' ./chunker/ && $(STATICCHECK) -tags '$(TAGS)' ./chunker/)
	@# GOFLAGS carries the tags into the integration tests' own build.
	GOFLAGS='$(if $(TAGS),-tags=$(TAGS))' $(GO) test -race -count=1 -p 2 -timeout 40m ./...
	@# The pure-Go encoder too: a CGO_ENABLED=0 build must work and use it.
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/pgstow
	CGO_ENABLED=0 $(GO) test -count=1 ./chunker/ ./uploader/
	@# The shipped build without -race, whose sync.Pool keeps its buffers:
	@# no allocation per chunk in proportion to its size, and the pipeline
	@# benchmark's bytes and allocations per chunk (printed, not judged).
	$(GO) test -count=1 $(if $(TAGS),-tags '$(TAGS)') -run 'TestNoPerChunkAllocation' -bench 'BenchmarkPipeline' -benchtime 2x -benchmem ./uploader/

deps:
	bash scripts/install-deps.sh

vet:
	$(GO) vet ./...

lint: deps
	$(STATICCHECK) ./...

build:
	$(GO) build -tags '$(TAGS)' -o bin/pgstow ./cmd/pgstow

demo: build
	bash scripts/demo.sh

# The benchmark harness (docs/benchmarks.md); bench-small is CI's reduced run,
# the many-small-files dataset included with 500 tables instead of 20000.
.PHONY: bench bench-small
bench:
	bash scripts/bench.sh

bench-small:
	BENCH_ROWS=50000 BENCH_SCALE=2 BENCH_RUNS=2 BENCH_MANYFILES_TABLES=500 bash scripts/bench.sh

# Runs every Fuzz* function of the repository for $(FUZZTIME) each, one at a
# time (go test -fuzz takes one function of one package). CI gives a count
# (e.g. 10000x): with Go 1.26 a duration can end in a spurious "context
# deadline exceeded" on a loaded machine (golang/go#75804).
fuzz-short:
	@set -eu; \
	list=$$(grep -rE --include='*_test.go' --exclude-dir=.cache -o '^func Fuzz[A-Za-z0-9_]*\(' . | \
		sed -E 's|^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\($$|\1 \2|' | sort -u); \
	[ -n "$$list" ] || { echo "fuzz-short: no Fuzz functions found"; exit 0; }; \
	echo "$$list" | while read -r dir fn; do \
		echo "fuzz-short: $$fn in $$dir for $(FUZZTIME)"; \
		$(GO) test $(if $(TAGS),-tags '$(TAGS)') -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) "$$dir" </dev/null; \
	done
