package redistest

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook that counts a client's round trips to
// Redis: each command sent alone and each pipeline is one; a new
// connection's handshake is not counted. Add it with Client.AddHook.
type RoundTrips struct{ n atomic.Int64 }

// N is how many round trips were counted so far.
func (h *RoundTrips) N() int64 { return h.n.Load() }

// Count is how many round trips f made.
func (h *RoundTrips) Count(f func()) int64 {
	before := h.n.Load()
	f()
	return h.n.Load() - before
}

func (h *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !Handshake(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, Handshake) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// Handshake reports whether cmd is part of a new connection's handshake
// (HELLO, CLIENT, AUTH, SELECT, READONLY), which go-redis sends on its own.
func Handshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select", "readonly":
		return true
	}
	return false
}
