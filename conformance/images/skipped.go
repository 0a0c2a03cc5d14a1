package images

import (
	imageutils "k8s.io/kubernetes/test/utils/image"
)

// skipped are the images of the suite's manifest (test/utils/image) that
// Build does not make, and why. The manifest's list serves every e2e test;
// these were found by reading the tests tagged [Conformance] at v1.37.2 and
// the framework helpers they call.
var skipped = []struct {
	id  imageutils.ImageID
	why string
}{
	{imageutils.AgnhostPrivate, "the private-registry ReplicaSet and ReplicationController tests ([Feature:gce]), not [Conformance]"},
	{imageutils.AppArmorLoader, "AppArmor tests, not [Conformance]"},
	{imageutils.DistrolessIptables, "kube-proxy tests, not [Conformance]"},
	{imageutils.InvalidRegistryImage, "a test expects its pull to fail (not [Conformance])"},
	{imageutils.IpcUtils, "the e2e prepull list (--prepull-images) and IPC tests, not [Conformance]"},
	{imageutils.NFSProvisioner, "storage provisioning tests, not [Conformance]"},
	{imageutils.NodePerfNpbEp, "node performance tests (e2e_node)"},
	{imageutils.NodePerfNpbIs, "node performance tests (e2e_node)"},
	{imageutils.NodePerfPytorchWideDeep, "node performance tests (e2e_node)"},
	{imageutils.NonRoot, "runAsNonRoot tests, not [Conformance]"},
	{imageutils.Perl, "node e2e image list only (e2e_node)"},
	{imageutils.RegressionIssue74839, "a conntrack regression test, not [Conformance]"},
	{imageutils.ResourceConsumer, "autoscaling tests, not [Conformance]"},
	{imageutils.VolumeNFSServer, "NFS volume tests (and the prepull list), not [Conformance]"},
	{imageutils.VolumeISCSIServer, "iSCSI volume tests, not [Conformance]"},
	{imageutils.SampleDevicePlugin, "device plugin tests (e2e_node)"},
}

// csiWhy is why the images the manifest adds from the CSI drivers' YAML
// (registry.k8s.io/sig-storage/...) are not built.
const csiWhy = "CSI driver tests (sig-storage), not [Conformance]"

// Skipped returns the references of the suite's manifest that Build does
// not make, each with why.
func Skipped() map[string]string {
	out := map[string]string{}
	ids := map[imageutils.ImageID]string{}
	for _, s := range skipped {
		ids[s.id] = s.why
	}
	built := map[string]bool{}
	for _, r := range recipes {
		built[ref(r.id)] = true
	}
	for id, c := range imageutils.GetOriginalImageConfigs() {
		r := c.GetE2EImage()
		if why, ok := ids[id]; ok {
			out[r] = why
		} else if id > imageutils.SampleDevicePlugin && !built[r] {
			out[r] = csiWhy
		}
	}
	return out
}
