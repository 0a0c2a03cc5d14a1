package inspect

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/initramfs"
)

func TestBakedConfigRoundTrip(t *testing.T) {
	for _, baked := range [][]byte{[]byte("#cloud-config\nhostname: baked\n"), nil} {
		var buf bytes.Buffer
		_, err := initramfs.Write(context.Background(), &buf, initramfs.Spec{
			ModTime: time.Unix(0, 0), Init: filetree.Bytes("#!init"), BakedConfig: baked,
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := BakedConfig(buf.Bytes())
		if err != nil || !bytes.Equal(got, baked) {
			t.Fatalf("BakedConfig = %q, %v; want %q", got, err, baked)
		}
	}
	if _, err := BakedConfig([]byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3}); err == nil {
		t.Fatal("a broken zstd stream gave no error")
	}
}
