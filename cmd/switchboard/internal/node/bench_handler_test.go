package node

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// handlerWriter is a ResponseWriter that keeps the status and discards the
// body. It sets deadlines as a connection's does, and cannot be hijacked:
// a held request waits in its handler.
type handlerWriter struct {
	hdr    http.Header
	status int
}

func (w *handlerWriter) Header() http.Header { return w.hdr }

func (w *handlerWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}

func (w *handlerWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(b), nil
}

func (w *handlerWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *handlerWriter) SetWriteDeadline(time.Time) error { return nil }

// answeringCommander stands in for Kafka and the item service: each
// command is answered, after Publish returns, with one takedown.confirmed
// through the node's Recorder, as the hub's consumer would.
type answeringCommander struct {
	cmds chan producers.CloudEvent
}

func (c *answeringCommander) Publish(_ context.Context, _, _ string, ev producers.CloudEvent) error {
	c.cmds <- ev
	return nil
}

// BenchmarkTakedownHandler is POST /v1/takedowns through the node's whole
// handler (request log, HTTP guard, route metrics, CORS, throttle, tracing,
// authentication, the adapter) on the memory backplane and outcome store,
// in process: the allocations per takedown of the request path, without
// net/http's connection and Kafka. The confirmation is recorded and
// published to the hub as the consumer would; allocs/op and B/op include
// that.
func BenchmarkTakedownHandler(b *testing.B) {
	cfg, err := config.Load("", nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Auth.Principals = []config.Principal{{Name: "bench-police", Role: config.RolePolice, Token: benchPoliceToken}}
	cfg.Limits.Connections = 20000
	cfg.Limits.TakedownRate = 1e9
	cfg.Limits.TakedownBurst = 1 << 30
	log := slog.New(slog.DiscardHandler)
	a := &Node{cfg: cfg, log: log}
	a.commands = a.declaredCommands()
	cmds, err := compileCommands(a.commands)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.startBackplane(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer a.bp.(hub.Closer).Close()
	if a.hub, err = hub.New(hub.Config{}, a.bp, log); err != nil {
		b.Fatal(err)
	}
	defer a.hub.Shutdown(context.Background())
	if err := a.startAuth(); err != nil {
		b.Fatal(err)
	}
	defer a.auth.Close()
	commandsTopic, outcomesTopic := cfg.TakedownTopics()
	trust := takedown.Trust{Topic: outcomesTopic, Sources: cfg.Takedown.OutcomeSources}
	rec := &takedown.Recorder{Store: a.store, Next: a.hub, Trust: trust, Commands: cmds}
	cmd := &answeringCommander{cmds: make(chan producers.CloudEvent, 16)}
	defer close(cmd.cmds)
	go func() {
		for c := range cmd.cmds {
			id := "confirmed-" + c.ID
			js := `{"specversion":"1.0","id":"` + id + `","source":"` + producers.ItemServiceSource + `","type":"` + takedown.TypeConfirmed +
				`","subject":"` + c.Subject + `","correlationid":"` + c.CorrelationID +
				`","data":{"item_id":"` + c.Subject + `","removed_from":["group-1"],"confirmed_at":"2026-11-22T00:00:00Z"}}`
			ev := &hub.Event{ID: id, Source: producers.ItemServiceSource, Type: takedown.TypeConfirmed, Subject: c.Subject,
				CorrelationID: c.CorrelationID, Topic: outcomesTopic, JSON: []byte(js)}
			if err := rec.Publish(context.Background(), []string{"corr:" + c.CorrelationID}, ev); err != nil {
				b.Error(err)
			}
		}
	}()
	a.takedowns, err = takedown.New(takedown.Config{
		Commands: cmds, CommandsTopic: commandsTopic, Timeout: time.Minute, MaxWait: cfg.Takedown.MaxWait,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes, PublishWait: cfg.Takedown.PublishTimeout, Trust: trust, Observe: a.observeCommand,
	}, a.hub, a.store, cmd, a.auth, log)
	if err != nil {
		b.Fatal(err)
	}
	a.stats = newReportStats(a.hub, "reports", log)
	a.metrics = newMetrics(a)
	if a.guard, err = hub.NewHTTPGuard(hub.HTTPGuardConfig{BodyTimeout: cfg.HTTP.BodyTimeout, MaxBodyBytes: cfg.HTTP.MaxBodyBytes}, log); err != nil {
		b.Fatal(err)
	}
	handler := hub.RequestLogClient(a.log, a.proxies.SourceAddr, a.guard.Handler(a.routes()))

	body := []byte(`{"item_id":"item-1","reason":"bench","authority_ref":"BENCH-1"}`)
	w := &handlerWriter{hdr: http.Header{}}
	post := func() {
		r, _ := http.NewRequest(http.MethodPost, "/v1/takedowns", nil)
		r.RemoteAddr, r.Host = "127.0.0.1:40000", "switchboard.test"
		r.Header = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + benchPoliceToken}}
		r.Body, r.ContentLength = nopBody{bytes.NewReader(body)}, int64(len(body))
		clear(w.hdr)
		w.status = 0
		handler.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	post() // warm up
	// The request itself (as net/http would have made it) is not the
	// handler's: measure it alone, to report the handler's share.
	base := testing.AllocsPerRun(100, func() {
		r, _ := http.NewRequest(http.MethodPost, "/v1/takedowns", nil)
		r.RemoteAddr, r.Host = "127.0.0.1:40000", "switchboard.test"
		r.Header = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + benchPoliceToken}}
		r.Body, r.ContentLength = nopBody{bytes.NewReader(body)}, int64(len(body))
		_ = strings.ToLower(r.Method)
	})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		post()
	}
	b.ReportMetric(base, "request-allocs/op")
}

// nopBody is a request body that closes as nothing.
type nopBody struct{ *bytes.Reader }

func (nopBody) Close() error { return nil }
