# ballast — the README's two commands run these targets through scripts/run,
# which first installs what a fresh Debian machine lacks (make included):
#   make image   builds out/ballast-x86_64.img and .iso from the embedded default
#   make test    runs every test, QEMU boots included

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOTOOLCHAIN ?= auto
# Tests that boot QEMU share two cores here: keep package-level parallelism low.
# -count=1: a QEMU boot depends on files Go's test cache does not track (QEMU,
# firmware, the images' packages), so CI always boots for real.
# -parallel 16: the QEMU tests run in parallel and wait for a free host core
# each (qemu-tests/vmslots_test.go), so every one of them must be able to wait.
TESTFLAGS ?= -p 2 -parallel 16 -count=1 -timeout 60m

.PHONY: image images-arm64 image-runtime-e2e image-oci test test-long conformance unit e2e deps-build deps-test ballast bench fuzz clean

image: deps-build
	$(GO) run ./cmd/ballast build

ballast:
	$(GO) build -o out/ballast ./cmd/ballast

deps-build:
	scripts/install-deps build

deps-test:
	scripts/install-deps test

# The arm64 images the QEMU scenarios boot (TestE2EARM64UEFI, TestRPi3Boot). They
# test booting, not Kubernetes, so they leave the runtime out: cross-building it and
# its component images for arm64 costs a cold machine ~30 minutes of CI.
images-arm64: deps-build
	$(GO) run ./cmd/ballast build --board arm64-efi --runtime none
	$(GO) run ./cmd/ballast build --board rpi3 --runtime none

# The image TestE2ERuntime boots: the default x86_64 image plus the test server's container image.
image-runtime-e2e: deps-build
	$(GO) run ./cmd/ballast build -f qemu-tests/testdata/runtime-e2e.yaml

# The image the container test bed runs (container-tests): the runtime as a
# container image (ballast build --format oci) with the test server's image.
image-oci: deps-build
	$(GO) run ./cmd/ballast build -f container-tests/testdata/cluster.yaml

# The QEMU scenarios boot out/ballast-x86_64.{img,iso}, the runtime image and the arm64 images;
# the container test bed runs the OCI image: build them first.
test: deps-test image image-runtime-e2e images-arm64 image-oci
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /container-tests)
	# The container bed after the QEMU boots: Docker's nodes beside two
	# emulated machines starve them on two cores.
	$(GO) test $(TESTFLAGS) ./container-tests
	cd runtime && $(GO) vet ./... && $(GO) test $(TESTFLAGS) ./...
	# The conformance driver's own tests; the suite itself is make conformance.
	$(GO) -C conformance vet ./... && $(GO) -C conformance test -short $(TESTFLAGS) ./...

# The scenarios too slow for every run (each skips itself in make test):
# TestPowerCut cuts the runtime image's power 10 times (~35 minutes under
# TCG), TestFullDataPartition fills a node's data partition (~16 minutes),
# TestE2EPackaged waits for Traefik and its helm jobs (~20 minutes).
test-long: deps-test image-runtime-e2e
	BALLAST_TEST_LONG=1 $(GO) test $(TESTFLAGS) -run '^(TestPowerCut|TestFullDataPartition|TestE2EPackaged)$$' -v ./qemu-tests

# The upstream Kubernetes [Conformance] suite, not part of make test: builds
# e2e.test, kubectl, ginkgo and the test images here (no registry is
# reachable), brings up a server and an agent on the container test bed
# (QUICK=1: the quick sample on one QEMU node from the default image) and
# runs it; summary, JUnit and logs in out/conformance. CONFORMANCE_FLAGS
# passes more (--focus, --skip, --keep; see out/bin/conformance run -h).
conformance: deps-test $(if $(QUICK),,image-oci)
	$(GO) -C conformance build -o $(CURDIR)/out/bin/conformance ./cmd/conformance
	out/bin/conformance run $(if $(QUICK),--quick) $(CONFORMANCE_FLAGS)

# Only the fast tests: no Debian downloads, no QEMU.
unit:
	$(GO) test -short ./...

bench: deps-test image
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$p | grep ^Fuzz); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s -fuzzminimizetime 5s $$p || exit 1; \
	  done; \
	done

clean:
	rm -rf out
