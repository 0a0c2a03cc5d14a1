package cloudconfig

import (
	"fmt"

	"github.com/ballast-os/ballast/internal/didyoumean"
)

// suggest is didyoumean.Suggest, named short for the many callers here.
func suggest(key string, known []string) string { return didyoumean.Suggest(key, known) }

// unknownKeyMessage is the message for an unknown key at one level.
func unknownKeyMessage(what string, key string, known []string) string {
	msg := fmt.Sprintf("unknown %s %q", what, key)
	if s := suggest(key, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg
}
