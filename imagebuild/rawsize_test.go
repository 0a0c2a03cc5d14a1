package imagebuild

import (
	"testing"

	"github.com/ballast-os/ballast/boards"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// An image with a runtime gets the board's BALLAST_DATA size (k3s runs on
// a disk exactly the image's size); without a runtime, with an explicit
// image.size, or on a Pi (the card is larger than any image) it keeps the
// small placeholder.
func TestDataSize(t *testing.T) {
	for _, tc := range []struct {
		board string
		kind  string
		size  spec.Size
		want  int64
	}{
		{"x86_64", spec.RuntimeBallast, 0, 3 << 30},
		{"arm64-efi", spec.RuntimeK3s, 0, 3 << 30},
		{"x86_64", spec.RuntimeNone, 0, 0},
		{"x86_64", spec.RuntimeBallast, 8 << 30, 0},
		{"rpi4", spec.RuntimeBallast, 0, 0},
	} {
		board, err := boards.Get(tc.board)
		if err != nil {
			t.Fatal(err)
		}
		b := &builder{board: board, spec: &spec.Spec{Runtime: spec.Runtime{Kind: tc.kind}, Image: spec.Image{Size: tc.size}}}
		if got := b.dataSize(); got != tc.want {
			t.Errorf("%s, runtime %s, image.size %s: data size %d, want %d", tc.board, tc.kind, tc.size, got, tc.want)
		}
	}
}
