package node

import (
	"log/slog"
)

// durationStrings is the loggers' ReplaceAttr: a duration is written as
// time.Duration.String ("1.5s"), in JSON too, where slog would write a
// number of nanoseconds.
func durationStrings(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
