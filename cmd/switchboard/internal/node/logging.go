package node

import (
	"io"
	"log/slog"

	"github.com/switchboard/switchboard/config"
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

// newLogger is the node's logger: log.level and log.format, durations
// as strings.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationStrings}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
