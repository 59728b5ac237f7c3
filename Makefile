# Ingot — make targets. `make help` lists them.
SHELL := /bin/bash
GO ?= go
BIN := bin
export CGO_ENABLED ?= 0

# PostgreSQL for the store's interop tests: started on demand when we are root
# and the package is installed (scripts/postgres-up.sh); override to point at
# another server.
INGOT_TEST_POSTGRES_URL ?= $(shell [ "$$(id -u)" = 0 ] && scripts/postgres-up.sh 2>/dev/null)
export INGOT_TEST_POSTGRES_URL

FUZZTIME ?= 20s
BENCHTIME ?= 1x

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the binaries into bin/ (static, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./conductor/cmd/... ./agent/cmd/...

.PHONY: demo
demo: ## the main demo: a QEMU virtual node provisioned end to end (root; installs what it needs). DEMO_FLAGS=--firmware=uefi
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root (network namespace, tap device, DHCP): sudo make demo"; exit 1; }
	scripts/install-deps.sh --demo
	$(MAKE) --no-print-directory build initramfs
	$(GO) run ./internal/cmd/demo --conductor $(BIN)/conductor --kernel build/vmlinuz --ramdisk build/initramfs.cpio.gz $(DEMO_FLAGS)

.PHONY: run
run: build ## run the conductor with its zero-configuration defaults
	$(BIN)/conductor

.PHONY: test
test: unit interop e2e ## every test tier: unit, interop with real peers, end to end with QEMU
	@echo "make test: all tiers passed"

.PHONY: unit
unit: ## unit tier: race detector, shuffled order, no external programs needed
	CGO_ENABLED=1 $(GO) test -race -shuffle=on -timeout 10m ./...

.PHONY: interop
interop: ## interop tier: real peers (baremetal CLI, Ironic, PostgreSQL, ipmi_sim, ...)
	$(GO) test -tags interop -run Interop -timeout 20m -count=1 ./...

.PHONY: e2e
e2e: ## end-to-end tier: QEMU nodes PXE-boot the agent ramdisk, IPMI via ipmi_sim (root)
	$(GO) test -tags e2e -run E2E -timeout 20m -count=1 ./e2e/

.PHONY: lint
lint: ## gofmt, go vet, go mod tidy check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags interop ./...
	$(GO) vet -tags e2e ./...
	$(GO) mod tidy -diff

.PHONY: bench
bench: ## benchmarks (ratios against baselines; see docs/PERFORMANCE.md)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m ./...
	$(GO) test -tags e2e -run '^$$' -bench . -count 1 -timeout 30m ./e2e/

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

.PHONY: docs
docs: ## regenerate docs generated from code (state diagram)
	$(GO) test ./conductor/provision -run TestDiagrams -update

# The deploy ramdisk's kernel: Debian's KERNEL_FLAVOR kernel (cloud-amd64
# boots fastest in VMs; amd64 has every driver, for physical servers), or
# your own: make initramfs KERNEL=/boot/vmlinuz-$$(uname -r)
KERNEL_FLAVOR ?= cloud-amd64
KERNEL ?=
MODULE_LISTS ?= initramfs/modules.txt

.PHONY: kernel
kernel: ## fetch Debian's KERNEL_FLAVOR kernel into build/kernel (VM boot tests fetch it themselves too)
	scripts/fetch-kernel.sh build/kernel $(KERNEL_FLAVOR)

.PHONY: initramfs
initramfs: ## build the agent's ramdisk: build/initramfs.cpio.gz and build/vmlinuz (see initramfs/modules.txt)
	@set -eo pipefail; kernel="$(KERNEL)"; \
	if [ -z "$$kernel" ]; then kernel=$$(scripts/fetch-kernel.sh build/kernel $(KERNEL_FLAVOR)); fi; \
	$(GO) run ./initramfs/cmd/mkinitramfs -kernel "$$kernel" -modules $(MODULE_LISTS) -o build/initramfs.cpio.gz; \
	cp "$$kernel" build/vmlinuz.tmp && mv build/vmlinuz.tmp build/vmlinuz; \
	echo "build/vmlinuz: $$kernel"

.PHONY: deps
deps: ## install the Debian packages the tests need (root)
	scripts/install-deps.sh

.PHONY: ci
ci: lint test ## what CI runs after installing dependencies

.PHONY: clean
clean: ## remove build outputs
	rm -rf $(BIN) build
