package node

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/tracing"
)

// tracingFlushTimeout bounds the export of the last spans at exit.
const tracingFlushTimeout = 5 * time.Second

// startTracing installs the process's trace export as otel.* says (SPEC
// §10): nothing at all without otel.endpoint. stop flushes what is not
// exported yet, within tracingFlushTimeout, and ends the export.
func startTracing(ctx context.Context, cfg config.Config, log *slog.Logger) (stop func(), err error) {
	o := cfg.OTel
	shutdown, err := tracing.Setup(ctx, o.Endpoint, o.ServiceName)
	if err != nil {
		return nil, err
	}
	if o.Endpoint != "" {
		log.Info("tracing: spans are exported by OTLP/HTTP", "endpoint", o.Endpoint, "service", o.ServiceName)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingFlushTimeout)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("tracing: the last spans were not exported", "err", fmt.Errorf("otel.endpoint: %w", err))
		}
	}, nil
}
