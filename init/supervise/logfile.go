package supervise

import (
	"fmt"
	"os"
	"sync"
)

// LogFile is a size-rotated log: when a write would take Path past
// MaxSize, Path becomes Path.1 (Path.1 becomes Path.2, ... up to Keep
// files) and a new Path is started.
type LogFile struct {
	Path    string
	MaxSize int64
	Keep    int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Write appends p, rotating first when needed.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	if l.size > 0 && l.size+int64(len(p)) > l.MaxSize {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

func (l *LogFile) open() error {
	f, err := os.OpenFile(l.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

func (l *LogFile) rotate() error {
	l.f.Close()
	l.f = nil
	keep := max(l.Keep, 1)
	os.Remove(fmt.Sprintf("%s.%d", l.Path, keep))
	for i := keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", l.Path, i), fmt.Sprintf("%s.%d", l.Path, i+1))
	}
	if err := os.Rename(l.Path, l.Path+".1"); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("rotating log: %w", err)
	}
	return l.open()
}

// Close closes the current file.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
