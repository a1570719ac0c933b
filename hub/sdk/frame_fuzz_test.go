package sdk

import (
	"context"
	"log/slog"
	"testing"
)

// FuzzHandle: no server message, however malformed, panics the client or
// reaches a subscription other than its channel's.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"type":"event","channel":"reports","cursor":"a.1","event":{"id":"1","source":"/s","type":"t","time":"2026-12-01T00:00:00Z","data":{"n":1}}}`,
		`{"type":"batch","frames":[{"type":"gap","channel":"reports"},{"type":"event","channel":"reports","cursor":"a.2","event":{}}]}`,
		`{"type":"ack","id":"1","cursor":"a.0"}`,
		`{"type":"ack","id":"2","correlation_id":"c"}`,
		`{"type":"result","id":"2","correlation_id":"c","status":"confirmed","event":null}`,
		`{"type":"error","id":"1","code":"forbidden","message":"no"}`,
		`{"type":"batch","frames":[{"type":"batch","frames":[]}]}`,
		`{"type":"event","channel":"reports","event":"not an object"}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := &Client{opts: Options{QueueSize: 4, Logger: slog.New(slog.DiscardHandler)}, ctx: ctx, cancel: cancel,
			subs: map[string]*Subscription{}, reqs: map[string]request{}, calls: map[*pendingCall]struct{}{}, byCorr: map[string]*pendingCall{}}
		s := &Subscription{c: c, channel: "reports", events: make(chan Event, 4), ack: make(chan struct{}), stop: make(chan struct{})}
		pc := &pendingCall{command: "takedowns", key: "k", done: make(chan struct{})}
		c.subs["reports"] = s
		c.reqs["1"] = request{sub: s}
		c.reqs["2"] = request{call: pc}
		c.calls[pc] = struct{}{}
		cancel() // a full queue gives up instead of waiting
		c.handle(b)
		s.close(nil)
		for ev := range s.events {
			if ev.Channel != "reports" {
				t.Fatalf("an event of %q reached the reports subscription", ev.Channel)
			}
		}
	})
}
