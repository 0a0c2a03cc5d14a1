// Package timesync sets the clock from NTP servers. A Raspberry Pi has no
// real-time clock, so time must be right before anything checks a
// certificate; a node without network must still boot, so a sync that
// gets no answer gives up quickly and says so.
package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/beevik/ntp"
	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds one Sync over all servers.
const DefaultTimeout = 5 * time.Second

// perServer bounds one server's query so a dead first server leaves time
// for the next.
const perServer = 2 * time.Second

// ErrNoServers is returned by Sync when the server list is empty.
var ErrNoServers = errors.New("timesync: no NTP servers")

// Options are Sync's and Run's seams and limits.
type Options struct {
	// Timeout bounds one Sync over all servers; default DefaultTimeout.
	Timeout time.Duration
	// SetClock steps the system clock; default clock_settime(CLOCK_REALTIME).
	SetClock func(time.Time) error
	// Now reads the clock; default time.Now.
	Now func() time.Time
	// Log receives Run's reports; default discards.
	Log *slog.Logger
	// Floor: an answer before it (the image's build time) is refused, as
	// is one more than MaxAhead past the local clock when that clock is
	// itself at or above the floor: one bad or hostile answer must not
	// make every certificate expired or not yet valid.
	Floor time.Time
}

// MaxAhead bounds how far forward a sane local clock is stepped.
const MaxAhead = 5 * 365 * 24 * time.Hour

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// SetSystemClock steps CLOCK_REALTIME to t.
func SetSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime: %w", err)
	}
	return nil
}

// Sync asks the servers in order, takes the first valid answer, steps the
// clock by its offset and returns the offset. Servers are "host" or
// "host:port". It returns within opts.Timeout (or ctx's deadline if
// sooner), with an error naming each server's failure.
func Sync(ctx context.Context, servers []string, opts Options) (time.Duration, error) {
	if len(servers) == 0 {
		return 0, ErrNoServers
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	setClock := opts.SetClock
	if setClock == nil {
		setClock = SetSystemClock
	}
	var errs []error
	for _, s := range servers {
		deadline, _ := ctx.Deadline()
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: not tried: %w", s, context.DeadlineExceeded))
			continue
		}
		q := min(left, perServer)
		resp, err := ntp.QueryWithOptions(s, ntp.QueryOptions{
			Timeout: q,
			// The default dialer resolves names without a deadline; with no
			// network a stuck DNS lookup would hold up the boot.
			Dialer: func(local, remote string) (net.Conn, error) {
				dctx, dcancel := context.WithTimeout(ctx, q)
				defer dcancel()
				var d net.Dialer
				if local != "" {
					d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(local)}
				}
				return d.DialContext(dctx, "udp", remote)
			},
		})
		if err == nil {
			err = resp.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		now := opts.now()
		t := now.Add(resp.ClockOffset)
		if !opts.Floor.IsZero() && t.Before(opts.Floor) {
			errs = append(errs, fmt.Errorf("%s: says %s, before this image was built (%s): refused", s, t.UTC().Format(time.RFC3339), opts.Floor.UTC().Format(time.RFC3339)))
			continue
		}
		if !opts.Floor.IsZero() && !now.Before(opts.Floor) && resp.ClockOffset > MaxAhead {
			errs = append(errs, fmt.Errorf("%s: would step the clock %v forward: refused", s, resp.ClockOffset.Round(time.Hour)))
			continue
		}
		if err := setClock(t); err != nil {
			return resp.ClockOffset, fmt.Errorf("timesync: %s answered, offset %v: %w", s, resp.ClockOffset, err)
		}
		return resp.ClockOffset, nil
	}
	return 0, fmt.Errorf("timesync: no server answered: %w", errors.Join(errs...))
}

// Run keeps the clock right: it syncs every interval until ctx ends,
// retrying failures sooner (from 30 s, doubling up to interval). It
// returns ctx's error.
func Run(ctx context.Context, servers []string, interval time.Duration, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = time.Hour
	}
	retry := min(30*time.Second, interval)
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		off, err := Sync(ctx, servers, opts)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("time sync failed", "err", err, "retry_in", retry)
			wait = retry
			retry = min(retry*2, interval)
			continue
		}
		log.Info("time synced", "offset", off)
		wait = interval
		retry = min(30*time.Second, interval)
	}
}
