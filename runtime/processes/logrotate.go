package processes

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Component logs are rotated by size, so that a component in a crash loop
// cannot fill a node's disk (an SD card, for years). The processes write
// their log file through a descriptor they inherit, opened O_APPEND, so
// the runner rotates by copy and truncate: path is copied to path.1 (path.1
// to path.2 ... up to Keep) and cut to zero; the next write lands at the
// new end. Lines written between the copy and the cut are lost, which is
// the price of not giving the processes a pipe (a pipe would tie
// containerd's shims, which outlive containerd, to this process).

const (
	defaultMaxLogSize = 10 << 20
	defaultKeepLogs   = 2
	logCheckInterval  = 30 * time.Second
)

// RotateLog rotates path when it has grown past max, keeping keep old
// copies (path.1 newest); it reports whether it did. Any writer that
// appends to path (O_APPEND) may use it.
func RotateLog(path string, max int64, keep int) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= max {
		if os.IsNotExist(err) {
			err = nil
		}
		return false, err
	}
	for i := keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1)); err != nil && !os.IsNotExist(err) {
			return false, err
		}
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer src.Close()
	if keep > 0 {
		dst, err := os.OpenFile(path+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return false, err
		}
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return false, err
		}
	}
	return true, src.Truncate(0)
}

// rotateLogs checks every component's log file until stop is closed.
func (s *Runner) rotateLogs(stop <-chan struct{}) {
	max := s.MaxLogSize
	if max <= 0 {
		max = defaultMaxLogSize
	}
	keep := s.KeepLogs
	if keep <= 0 {
		keep = defaultKeepLogs
	}
	t := time.NewTicker(orDefault(s.LogCheckInterval, logCheckInterval))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for _, c := range s.Components {
			if c.LogFile == "" {
				continue
			}
			if rotated, err := RotateLog(c.LogFile, max, keep); err != nil {
				s.log().Warn("rotating a component log", "component", c.Name, "err", err)
			} else if rotated {
				s.log().Info("rotated a component log", "component", c.Name, "file", c.LogFile)
			}
		}
	}
}
