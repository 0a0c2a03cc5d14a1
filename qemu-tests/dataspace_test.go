package qemutest

import (
	"context"
	"testing"
	"time"
)

// runtimeDataMin is the data partition TestE2ERuntime expects on a disk
// exactly the image's size: the x86_64 board's runtime_data_mib (3 GiB)
// less ext4's own overhead. The default image once had 64 MiB there, 55
// MB of ext4, which k3s filled while importing its images.
const runtimeDataMin = 2800 << 20

// checkDataPartition checks, once the packaged pods run, that the node
// booted on a disk exactly the image's size has the image's large data
// partition, that k3s was started without a word about space, and logs
// what k3s took on it: the figure behind the init's k3sImagesSize.
func checkDataPartition(t *testing.T, m *Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := m.Status(ctx)
	if err != nil {
		t.Errorf("status: %v", err)
		return
	}
	for _, s := range st.Boot.Stages {
		if s.Name == "services" && (s.Error != "" || s.Warning != "") {
			t.Errorf("services step: error %q, warning %q", s.Error, s.Warning)
		}
	}
	for _, d := range st.Disks {
		if d.Target != "/persist" {
			continue
		}
		t.Logf("data partition %s: %d MiB, %d MiB free, %d MiB used or reserved (ext4 keeps 5%% for root) with the packaged pods running",
			d.Source, d.Size>>20, d.Free>>20, (d.Size-d.Free)>>20)
		if d.Size < runtimeDataMin {
			t.Errorf("data partition %d MiB on a disk the image's size; want at least %d MiB", d.Size>>20, runtimeDataMin>>20)
		}
		return
	}
	t.Errorf("status lists no /persist among %+v", st.Disks)
}
