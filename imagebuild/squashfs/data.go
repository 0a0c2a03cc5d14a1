package squashfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// seqWriter turns an io.WriterAt into a buffered sequential writer that
// knows its offset.
type seqWriter struct {
	w   io.WriterAt
	off int64 // logical offset, buffered bytes included
	buf []byte
}

const seqBufSize = 1 << 20

func (s *seqWriter) write(p []byte) error {
	s.buf = append(s.buf, p...)
	s.off += int64(len(p))
	if len(s.buf) >= seqBufSize {
		return s.flush()
	}
	return nil
}

func (s *seqWriter) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if _, err := s.w.WriteAt(s.buf, s.off-int64(len(s.buf))); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

type fragEntry struct {
	start uint64
	size  uint32 // with dataStoredFlag when stored uncompressed
}

// blockJob is one data or fragment block on its way to the image.
type blockJob struct {
	raw    []byte
	out    []byte
	stored bool
	err    error
	file   *inode // nil for a fragment block
}

// dataWriter reads every regular file once, in the order given, cuts it
// into blocks and tail ends, compresses blocks in parallel in batches and
// writes them in order, so the output does not depend on scheduling.
type dataWriter struct {
	sw      *seqWriter
	c       compressor
	bs      int
	workers int

	batch []*blockJob
	free  [][]byte // raw buffers for reuse
	frag  []byte   // the fragment block being filled
	frags []fragEntry
	nfrag uint32 // index of the fragment block being filled
}

// batchBlocks bounds memory (two buffers of one block per job) while giving
// every worker several blocks per batch.
const batchBlocks = 64

func (d *dataWriter) buffer() []byte {
	if n := len(d.free); n > 0 {
		b := d.free[n-1]
		d.free = d.free[:n-1]
		return b[:d.bs]
	}
	return make([]byte, d.bs)
}

func (d *dataWriter) add(ctx context.Context, j *blockJob) error {
	d.batch = append(d.batch, j)
	if len(d.batch) >= batchBlocks {
		return d.runBatch(ctx)
	}
	return nil
}

func (d *dataWriter) runBatch(ctx context.Context) error {
	if len(d.batch) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(d.workers, len(d.batch)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(d.batch) {
					return
				}
				j := d.batch[i]
				j.out, j.err = d.c.compress(j.out, j.raw)
				if j.err == nil && len(j.out) >= len(j.raw) {
					j.stored = true
				}
			}
		})
	}
	wg.Wait()
	for _, j := range d.batch {
		if j.err != nil {
			return fmt.Errorf("compressing data block: %w", j.err)
		}
		start := uint64(d.sw.off)
		body, size := j.out, uint32(len(j.out))
		if j.stored {
			body, size = j.raw, uint32(len(j.raw))|dataStoredFlag
		}
		if err := d.sw.write(body); err != nil {
			return err
		}
		if j.file == nil {
			d.frags = append(d.frags, fragEntry{start: start, size: size})
		} else {
			if len(j.file.blockSizes) == 0 {
				j.file.blocksStart = start
			}
			j.file.blockSizes = append(j.file.blockSizes, size)
		}
		if cap(j.raw) >= d.bs {
			d.free = append(d.free, j.raw)
		}
	}
	d.batch = d.batch[:0]
	return nil
}

// writeFile queues f's full blocks and packs its tail into the current
// fragment block.
func (d *dataWriter) writeFile(ctx context.Context, f *inode) error {
	e := f.entry
	size := e.Data.Size()
	if size < 0 {
		return fmt.Errorf("%s: negative size %d", e.Path, size)
	}
	f.size = uint64(size)
	f.fragIndex = noFragment
	if size == 0 {
		return nil
	}
	rc, err := e.Data.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	defer rc.Close()
	rest := size
	for rest >= int64(d.bs) {
		b := d.buffer()
		if _, err := io.ReadFull(rc, b); err != nil {
			return fmt.Errorf("%s: reading %s: %w", e.Path, describe(e.Data), shortErr(err))
		}
		if err := d.add(ctx, &blockJob{raw: b, file: f}); err != nil {
			return err
		}
		rest -= int64(d.bs)
	}
	if rest > 0 {
		if len(d.frag)+int(rest) > d.bs {
			if err := d.flushFragment(ctx); err != nil {
				return err
			}
		}
		if d.frag == nil {
			d.frag = d.buffer()[:0]
		}
		f.fragIndex = d.nfrag
		f.fragOffset = uint32(len(d.frag))
		n := len(d.frag)
		d.frag = d.frag[:n+int(rest)]
		if _, err := io.ReadFull(rc, d.frag[n:]); err != nil {
			return fmt.Errorf("%s: reading %s: %w", e.Path, describe(e.Data), shortErr(err))
		}
	}
	// The inode records the size the tree promised; a source that has
	// grown since would silently lose its end.
	var one [1]byte
	if n, _ := rc.Read(one[:]); n > 0 {
		return fmt.Errorf("%s: %s is longer than its recorded size %d", e.Path, describe(e.Data), size)
	}
	return nil
}

func (d *dataWriter) flushFragment(ctx context.Context) error {
	if len(d.frag) == 0 {
		return nil
	}
	j := &blockJob{raw: d.frag}
	d.frag = nil
	d.nfrag++
	return d.add(ctx, j)
}

// finish writes the last fragment and whatever is still batched.
func (d *dataWriter) finish(ctx context.Context) error {
	if err := d.flushFragment(ctx); err != nil {
		return err
	}
	return d.runBatch(ctx)
}

func shortErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("shorter than its recorded size: %w", err)
	}
	return err
}

func describe(s filetree.Source) string {
	switch h := s.(type) {
	case filetree.HostFile:
		return h.Path
	case *filetree.HostFile:
		return h.Path
	}
	return "contents"
}
