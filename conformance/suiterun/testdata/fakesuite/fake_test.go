// Package fake is a small ginkgo suite shaped like e2e's: its output is the
// fixture the stream parser is tested on (../ginkgo-*.txt and .json, with
// the paths shortened). To make them again, in the conformance module:
//
//	go build -o /tmp/fs/ginkgo github.com/onsi/ginkgo/v2/ginkgo
//	go test -c -o /tmp/fs/fake.test ./suiterun/testdata/fakesuite
//	cd /tmp/fs && ./ginkgo --focus=' (?:NAMES)$' --no-color -v --timeout=24h \
//		--output-dir=/tmp/fs --json-report=report_parallel.json --procs=3 ./fake.test
//
// with NAMES the four non-[Serial] tests' names, quoted; the serial fixture
// the same with the [Serial] ones and "should be skipped", on one process.
package fake

import (
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
)

func TestFake(t *testing.T) {
	ginkgo.RunSpecs(t, "Kubernetes e2e suite")
}

var _ = ginkgo.Describe("[sig-node] Pods", func() {
	ginkgo.It("should pass [NodeConformance] [Conformance]", ginkgo.Label("Conformance", "NodeConformance"), func() {
		ginkgo.GinkgoWriter.Println("STEP: creating a pod")
		time.Sleep(300 * time.Millisecond)
	})
	ginkgo.It("should fail [Conformance]", ginkgo.Label("Conformance"), func() {
		ginkgo.GinkgoWriter.Println("I1207 12:00:00.000000 1 util.go:1] waiting")
		ginkgo.Fail("expected\n    <int>: 1\nto equal\n    <int>: 2")
	})
	ginkgo.It("should be skipped [Conformance]", ginkgo.Label("Conformance"), func() {
		ginkgo.Skip("only on Windows")
	})
})

var _ = ginkgo.Describe("[sig-network] DNS", func() {
	ginkgo.BeforeEach(func() {
		ginkgo.Fail("setup broke: the cluster has no DNS")
	})
	ginkgo.It("should resolve [Conformance]", ginkgo.Label("Conformance"), func() {})
})

var _ = ginkgo.Describe("[sig-apps] Daemon set [Serial]", ginkgo.Label("Serial"), func() {
	ginkgo.It("should run serially [Conformance]", ginkgo.Label("Conformance"), func() {
		ginkgo.GinkgoWriter.Println("STEP: rolling")
		time.Sleep(100 * time.Millisecond)
	})
	ginkgo.It("should fail serially [Conformance]", ginkgo.Label("Conformance"), func() {
		ginkgo.Fail("timed out waiting for the condition")
	})
})

var _ = ginkgo.Describe("[sig-storage] Other", func() {
	ginkgo.It("is not conformance", func() {})
})
