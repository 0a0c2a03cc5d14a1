package qemutest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/kubenode"
)

// LongEnv turns on the scenarios too slow for every run (make test-long).
const LongEnv = "BALLAST_TEST_LONG"

func requireLong(t *testing.T) {
	t.Helper()
	if os.Getenv(LongEnv) == "" {
		t.Skipf("a long scenario: run it with make test-long (%s=1)", LongEnv)
	}
}

// powerCut is one place the node loses power: QEMU is killed (no shutdown,
// nothing the guest had not flushed survives) when the console shows at,
// after the delay.
type powerCut struct {
	name  string
	at    *regexp.Regexp
	after time.Duration
}

// TestPowerCut pulls the plug on the runtime image ten times: during the
// first boot's partition grow and format, while k3s makes its first
// certificates, and while a Deployment rolls. After every cut the next
// boot must bring the data partition back intact, the node Ready, and
// every object and byte written before the cut that the API or the node
// acknowledged. Then the data partition is filled by a pod's hostPath:
// SSH and the agent still answer, and the node recovers once the file is
// removed.
func TestPowerCut(t *testing.T) {
	requireLong(t)
	useCores(t, prioLong, 2)
	img := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	sc := newScenario(t, "cut1")
	// The console of every boot, kept after the test for whoever reads a
	// failure of this half-hour scenario.
	consoleLog := filepath.Join(os.TempDir(), "ballast-powercut-console.log")
	os.Remove(consoleLog)
	m := startMachine(t, Options{
		Disk: img, DiskSize: fi.Size() + 1<<30, Memory: 4096, CPUs: 2, HonorFlush: true,
		UserData:   runtimeUserData("cut1", sc.pubkey),
		Forwards:   map[int]int{testServerNodePort: 0, 22: 0, 6443: 0},
		ConsoleLog: consoleLog,
	})
	t.Logf("every boot's console: %s", consoleLog)
	url := fmt.Sprintf("http://127.0.0.1:%d", m.HostPort(testServerNodePort))
	start := time.Now()

	cut := func(c powerCut) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		line, err := m.WaitConsole(ctx, c.at)
		if err != nil {
			t.Fatalf("cut %q: waiting for %s: %v", c.name, c.at, err)
		}
		time.Sleep(c.after)
		m.Kill()
		t.Logf("power cut %q, %s after %q", c.name, c.after, line)
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var cuts, bricks int
	var api *kubenode.Client
	// diagnose logs what the cluster looks like when a check fails.
	diagnose := func() {
		t.Logf("pods:\n%s", tryExec(m, "k3s", "kubectl", "get", "pods", "-A", "-o", "wide"))
		t.Logf("testserver:\n%s", tryExec(m, "sh", "-c", "k3s kubectl describe pods -l app=testserver | tail -n 40"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			diagnose()
		}
	})
	// up waits for the node after a cut: the boot ready on its data
	// partition (not tmpfs), the node Ready and the testserver and
	// CoreDNS pods Running.
	up := func(what string) {
		t.Helper()
		st := waitReady(t, m)
		for _, s := range st.Boot.Stages {
			if s.Name == "data-partition" && s.Error != "" {
				bricks++
				t.Fatalf("%s: the data partition did not come back: %s", what, s.Error)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), runtimeDeadline)
		defer cancel()
		if _, err := waitNode(ctx, m); err != nil {
			bricks++
			t.Fatalf("%s: the node did not come back Ready: %v", what, err)
		}
		if api == nil {
			api = apiClient(t, m)
		}
		waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{"default/testserver": "app=testserver", "kube-system/coredns": "k8s-app=kube-dns"})
		// The pods' statuses can be the last boot's: the service
		// answering is what shows the testserver back.
		httpGet(t, m, url+"/", runtimeDeadline)
		// And nothing is left broken: every pod runs again.
		waitAllPodsReady(t, m, api, 10*time.Minute)
	}

	// The first boot, cut twice in its data-partition step, then while k3s
	// makes its CAs and certificates (the first seconds after it starts)
	// and once the API answers.
	for _, c := range []powerCut{
		{"first boot, partition grown", regexp.MustCompile(`grew data partition`), 0},
		{"first boot, formatting", regexp.MustCompile(`creating file system on data partition`), 300 * time.Millisecond},
		{"k3s writing its first certificates", regexp.MustCompile(`runtime: runtime-start`), 4 * time.Second},
		{"k3s starting", regexp.MustCompile(`runtime: runtime-start`), 15 * time.Second},
		{"API up", regexp.MustCompile(`runtime: api`), 0},
	} {
		cut(c)
		cuts++
	}
	up("after the first-boot cuts")
	t.Logf("Ready after %d cuts, %s from the first power-on", cuts, time.Since(start).Round(time.Second))

	// Data acknowledged before each later cut: a file on the data
	// partition (synced), ConfigMaps through the API, bytes in the
	// testserver's volume.
	nodeExec(t, m, "sh", "-c", "echo intact > /var/lib/ballast/powercut-marker && sync")
	var objects []string
	var volumeData string
	write := func(i int) {
		t.Helper()
		name := fmt.Sprintf("powercut-%d", i)
		nodeExec(t, m, "k3s", "kubectl", "create", "configmap", name, "--from-literal=n="+fmt.Sprint(i))
		objects = append(objects, name)
		volumeData = fmt.Sprintf("written before cut %d", i)
		httpPutWait(t, url+"/file?path=powercut", volumeData, runtimeDeadline)
	}
	lost := map[string]bool{} // what was acknowledged before a cut and not there after
	check := func(what string) {
		t.Helper()
		if got := nodeExec(t, m, "cat", "/var/lib/ballast/powercut-marker"); got != "intact\n" {
			t.Errorf("%s: the marker on the data partition reads %q", what, got)
			lost["marker file"] = true
		}
		out := nodeExec(t, m, "k3s", "kubectl", "get", "configmaps", "-o", "name")
		for _, o := range objects {
			if !strings.Contains(out, "configmap/"+o+"\n") {
				t.Errorf("%s: configmap %s lost", what, o)
				lost["configmap "+o] = true
			}
		}
		if got := httpGet(t, m, url+"/file?path=powercut", 10*time.Minute); got != volumeData {
			t.Errorf("%s: the volume reads %q, want %q", what, got, volumeData)
			lost["volume file: "+volumeData] = true
		}
	}

	// Cuts while the Deployment rolls, at different points of the roll.
	for i, after := range []time.Duration{0, 2 * time.Second, 5 * time.Second, 9 * time.Second, 14 * time.Second} {
		write(cuts)
		nodeExec(t, m, "k3s", "kubectl", "rollout", "restart", "deployment/testserver")
		time.Sleep(after)
		m.Kill()
		cuts++
		t.Logf("power cut %d, %s into a rollout", cuts, after)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		up(fmt.Sprintf("after rollout cut %d", i+1))
		check(fmt.Sprintf("after cut %d", cuts))
	}
	t.Logf("%d cuts, %d bricks, %d objects lost (of %d configmaps, a marker file and %d volume writes), %s in all", cuts, bricks, len(lost), len(objects), len(objects), time.Since(start).Round(time.Second))
}

// TestFullDataPartition fills the data partition through a pod's
// hostPath, to the last block root may use: SSH and the agent must still
// answer, and once the files are removed the node is Ready again without
// disk pressure and takes new work.
func TestFullDataPartition(t *testing.T) {
	requireLong(t)
	useCores(t, prioLong, 2)
	img := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	sc := newScenario(t, "full1")
	m := startMachine(t, Options{
		Disk: img, DiskSize: 0, Memory: 4096, CPUs: 2,
		UserData: runtimeUserData("full1", sc.pubkey),
		Forwards: map[int]int{testServerNodePort: 0, 22: 0, 6443: 0},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", m.HostPort(testServerNodePort))
	waitNodeReady(t, m, runtimeDeadline)
	api := apiClient(t, m)
	waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{"default/testserver": "app=testserver"})
	httpPutWait(t, url+"/file?path=before-full", "written before the disk filled", runtimeDeadline)

	// fallocate takes the blocks at once (writing them would take many
	// minutes under emulation, and the kubelet evicts a slow filler at
	// its disk-pressure threshold before the disk is full): one file as
	// large as the file system, then halves until not even 4 KiB is left.
	// The pod runs as root, so it also takes ext4's root reserve.
	const pod = `apiVersion: v1
kind: Pod
metadata: {name: filler, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: fill
    image: docker.io/rancher/mirrored-library-busybox:1.37.0
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      n=0
      s=$(df -P -k /host | awk 'NR == 2 {print $2}')
      while [ "$s" -ge 4 ]; do
        if busybox fallocate -l "${s}k" /host/filler-$n 2>/dev/null; then
          n=$((n + 1))
        else
          rm -f /host/filler-$n
          s=$((s / 2))
        fi
      done
      sync
      echo "full: $n files"
      df -P -k /host
    volumeMounts: [{name: host, mountPath: /host}]
  volumes:
  - name: host
    hostPath: {path: /var/lib/rancher, type: Directory}
`
	nodeExec(t, m, "sh", "-c", "cat > /tmp/filler.yaml <<'EOF'\n"+pod+"EOF\nk3s kubectl apply -f /tmp/filler.yaml")
	waitLog(t, m, "the data partition is full", func() bool {
		f := strings.Fields(tryExec(m, "df", "-B1", "--output=avail", "/persist"))
		return len(f) == 2 && len(f[1]) < 7 // under 1 MB free
	}, 10*time.Minute)
	t.Logf("full: %s", strings.Join(strings.Fields(tryExec(m, "df", "-h", "/persist")), " "))
	t.Logf("filler: %s", tryExec(m, "k3s", "kubectl", "logs", "filler"))

	// Give the node time to hit every write it makes: the kubelet's
	// eviction loop, k3s's datastore, the init's logs and state.
	time.Sleep(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := m.Status(ctx); err != nil {
		t.Errorf("the agent does not answer with the data partition full: %v", err)
	}
	var out string
	var err error
	for ctx.Err() == nil {
		if out, err = m.SSH(ctx, sc.key, "hostname"); err == nil {
			break
		}
		time.Sleep(3 * time.Second)
	}
	if err != nil || strings.TrimSpace(out) != "full1" {
		t.Errorf("SSH with the data partition full: %q, %v", out, err)
	}
	t.Logf("node with the disk full: %s", tryExec(m, "k3s", "kubectl", "get", "node", "full1", "-o", `jsonpath={range .status.conditions[*]}{.type}={.status} {end}`))

	nodeExec(t, m, "sh", "-c", "rm -f /var/lib/rancher/filler-*")
	tryExec(m, "k3s", "kubectl", "delete", "pod", "filler", "--wait=false")
	waitLog(t, m, "no disk pressure", func() bool {
		out := tryExec(m, "k3s", "kubectl", "get", "node", "full1", "-o", `jsonpath={range .status.conditions[*]}{.type}={.status} {end}`)
		return strings.Contains(out, "DiskPressure=False") && strings.Contains(out, "Ready=True")
	}, 15*time.Minute)
	// The node takes new work again, and kept what it had.
	nodeExec(t, m, "k3s", "kubectl", "create", "configmap", "after-full", "--from-literal=ok=1")
	waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{"default/testserver": "app=testserver", "kube-system/coredns": "k8s-app=kube-dns"})
	if got := httpGet(t, m, url+"/file?path=before-full", 10*time.Minute); got != "written before the disk filled" {
		t.Errorf("after the disk was freed the testserver's volume reads %q", got)
	}
	httpPutWait(t, url+"/file?path=after-full", "written after", 5*time.Minute)
}

// waitAllPodsReady waits until every pod of the cluster that is not being
// deleted has finished (a job's) or runs with all its containers ready.
func waitAllPodsReady(t *testing.T, m *Machine, api *kubenode.Client, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var notReady []string
	err := m.WaitFor(ctx, "every pod ready", 10*time.Second, func(ctx context.Context) (bool, error) {
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := api.Get(gctx, "/api/v1/pods")
		if err != nil {
			return false, nil
		}
		var pl struct {
			Items []struct {
				Metadata struct {
					Name, Namespace   string
					DeletionTimestamp *string
				}
				Status struct {
					Phase             string
					ContainerStatuses []struct {
						Name  string
						Ready bool
						State map[string]struct{ Reason string }
					}
				}
			}
		}
		if err := json.Unmarshal(out, &pl); err != nil {
			return false, err
		}
		notReady = notReady[:0]
		for _, p := range pl.Items {
			if p.Metadata.DeletionTimestamp != nil || p.Status.Phase == "Succeeded" {
				continue
			}
			ok := p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) > 0
			why := p.Status.Phase
			for _, c := range p.Status.ContainerStatuses {
				ok = ok && c.Ready
				for state, st := range c.State {
					if st.Reason != "" {
						why += fmt.Sprintf(" %s %s(%s)", c.Name, state, st.Reason)
					}
				}
			}
			if !ok {
				notReady = append(notReady, p.Metadata.Namespace+"/"+p.Metadata.Name+": "+why)
			}
		}
		return len(notReady) == 0, nil
	})
	if err != nil {
		t.Fatalf("pods not ready: %s: %v\n%s", strings.Join(notReady, "; "), err,
			tryExec(m, "sh", "-c", "k3s kubectl describe pods -A | grep -A12 -i 'last state\\|events:' | tail -n 120"))
	}
}

// httpPutWait retries a PUT until it succeeds (the service may be rolling).
func httpPutWait(t *testing.T, url, body string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := tryPut(url, body)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUT %s: %v", url, err)
		}
		time.Sleep(3 * time.Second)
	}
}
