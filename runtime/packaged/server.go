package packaged

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
)

// ChartsDir is where an image with ballast's runtime carries the charts
// of the packaged HelmCharts (traefik, traefik-crd), as the image builder
// writes them.
var ChartsDir = "/usr/lib/ballast/charts"

var (
	traefikChart    = regexp.MustCompile(`^traefik-[0-9][^/]*\.tgz$`)
	traefikCRDChart = regexp.MustCompile(`^traefik-crd-[0-9][^/]*\.tgz$`)
)

// StageCharts copies the charts (*.tgz) in src into dst
// (server/static/charts, which the supervisor serves), rewriting only
// those whose content changed, and returns the file names of the traefik
// and traefik-crd charts ("" for one src lacks; a src that does not
// exist has none). Charts of earlier images stay in dst, as in k3s.
func StageCharts(src, dst string) (traefik, crd string, err error) {
	ents, err := os.ReadDir(src)
	if os.IsNotExist(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("packaged: charts: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && filepath.Ext(e.Name()) == ".tgz" {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			return "", "", fmt.Errorf("packaged: charts: %w", err)
		}
		p := filepath.Join(dst, n)
		same, err := sameContent(p, data)
		if err != nil {
			return "", "", err
		}
		if !same {
			if err := writeAtomic(p, data); err != nil {
				return "", "", err
			}
		}
		switch {
		case traefikCRDChart.MatchString(n):
			crd = n
		case traefikChart.MatchString(n):
			traefik = n
		}
	}
	return traefik, crd, nil
}

// ValuesFor maps a server's configuration to the template values and
// the names to disable, as k3s's server does: default-local-storage-path
// defaults to <data-dir>/storage, and the cloud-controller RBAC (ccm) is
// disabled when both disable-cloud-controller and servicelb are.
// CoreDNS's NodeHosts is not in the manifest: the node controller
// (package nodecontroller) keeps it for every node.
func ValuesFor(s *config.ServerConfig) (Values, []string) {
	v := Values{
		ClusterDNS:            s.ClusterDNS,
		ClusterDomain:         s.ClusterDomain,
		SystemDefaultRegistry: s.SystemDefaultRegistry,
		StoragePath:           s.DefaultLocalStoragePath,
		FlannelExternalIP:     s.FlannelExternalIP,
	}
	if v.StoragePath == "" {
		v.StoragePath = datadir.Layout{Root: s.DataDir}.Storage()
	}
	disable := append([]string(nil), s.Disable...)
	if s.DisableCloudController && s.Disabled("servicelb") {
		disable = append(disable, "ccm")
	}
	return v, disable
}

// StageServer is the one call `k3s server` makes (after copying the
// image's charts into server/static/charts) before it starts the
// deploy controller: Stage into <data-dir>/server/manifests with the
// server's values. Pass Result.DeployControllerArgs() to
// `k3s deploy-controller` so that disabled components' objects are
// deleted.
func StageServer(s *config.ServerConfig) (Result, error) {
	v, disable := ValuesFor(s)
	lay := datadir.Layout{Root: s.DataDir}
	var err error
	v.TraefikChart, v.TraefikCRDChart, err = StageCharts(ChartsDir, filepath.Join(lay.Static(), "charts"))
	if err != nil {
		return Result{}, err
	}
	res, err := Stage(lay.Manifests(), v, disable)
	if (v.TraefikChart == "" || v.TraefikCRDChart == "") && !s.Disabled("traefik") {
		res.Warnings = append(res.Warnings, fmt.Sprintf("traefik: this image carries no traefik and traefik-crd charts in %s, so Traefik is not deployed (an image built without the traefik image); add disable: [traefik] to say so", ChartsDir))
	}
	return res, err
}
