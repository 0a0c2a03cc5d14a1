// Package images holds the source of the small programs ballast ships as
// container images of its own (pause, svclb, klipperhelm, testserver). The programs use the
// standard library only, so the image builder can compile them from the
// embedded source for any architecture without the ballast checkout.
package images

import "embed"

// Sources holds each program's non-test .go files, as <name>/<file>.go.
//
//go:embed pause/*.go svclb/*.go klipperhelm/*.go testserver/*.go
var Sources embed.FS
