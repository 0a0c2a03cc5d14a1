// Package examples holds the files people copy to start from: the default
// cloud-config, which images embed when their build spec names none, and an
// example build spec.
package examples

import _ "embed"

// DefaultCloudConfig is default-cloud-config.yaml: the cloud-config baked
// into an image whose build spec names none. Treat it as read-only.
//
//go:embed default-cloud-config.yaml
var DefaultCloudConfig []byte
