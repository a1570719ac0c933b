package kafkaconn

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/segmentio/kafka-go"
)

// Logger routes a kafka-go client's printf logging (a Reader's or
// Writer's Logger or ErrorLogger) to log at level, each message prefixed
// with what ("kafka reader: ..."), so kafka-go logs through the
// component's slog logger like the rest of it.
func Logger(log *slog.Logger, level slog.Level, what string) kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) {
		if log.Enabled(context.Background(), level) {
			log.Log(context.Background(), level, what+": "+fmt.Sprintf(msg, args...))
		}
	})
}
