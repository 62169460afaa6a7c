# Sendense build, test and demo entry points. See README.md.
SHELL := /bin/bash
MODULES := shared migrations hub agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/sendense/sendense/shared/version.Version=$(VERSION) -X github.com/sendense/sendense/shared/version.Commit=$(COMMIT)
BIN := bin
export CGO_ENABLED ?= 0

.PHONY: all build test fuzz chaos demo lint bench clean package

all: build

build:
	@mkdir -p $(BIN)
	cd hub && go build -trimpath -ldflags '$(LDFLAGS)' -o ../$(BIN)/sendense-hub ./cmd/sendense-hub
	cd agent && go build -trimpath -ldflags '$(LDFLAGS)' -o ../$(BIN)/sendense-agent ./cmd/sendense-agent
	cd agent && go build -trimpath -ldflags '$(LDFLAGS)' -o ../$(BIN)/sendense-lab ./cmd/sendense-lab

test:
	scripts/test.sh

# Every fuzz target for FUZZTIME each (scripts/test.sh runs them for 3s each).
FUZZTIME ?= 60s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# The fault suite's long run: N randomized fault trials and the 50-agent load test
# (scripts/test.sh runs a few trials).
N ?= 100
chaos:
	scripts/chaos.sh $(N)

demo: build
	scripts/demo.sh

bench: build
	scripts/bench.sh

package:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' scripts/package.sh

lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done

clean:
	rm -rf $(BIN)
