package supervise

import "time"

// Backoff is the restart policy: the first restart waits Min, each
// following one doubles up to Max, and a run that lasted Stable or longer
// resets the delay to Min.
type Backoff struct {
	Min, Max, Stable time.Duration
}

// DefaultBackoff restarts after 1s, 2s, 4s... up to a minute; a service
// that ran for 30s is considered healthy again.
var DefaultBackoff = Backoff{Min: time.Second, Max: time.Minute, Stable: 30 * time.Second}

// Next returns the delay before the next start, given the previous delay
// (0 for none yet) and how long the last run lasted.
func (b Backoff) Next(prev, ranFor time.Duration) time.Duration {
	if prev == 0 || ranFor >= b.Stable {
		return b.Min
	}
	next := prev * 2
	if next > b.Max {
		next = b.Max
	}
	return next
}
