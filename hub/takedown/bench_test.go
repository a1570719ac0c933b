package takedown

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/producers"
)

// benchWriter is a ResponseWriter that keeps the status and discards the
// body; it cannot be hijacked, so a held request waits in its handler.
type benchWriter struct {
	hdr    http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.hdr }
func (w *benchWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}

func (w *benchWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}

// SetReadDeadline and SetWriteDeadline succeed, as on a connection.
func (w *benchWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }

func (w *benchWriter) reset() {
	clear(w.hdr)
	w.status, w.n = 0, 0
}

// rewindBody is a request body read again for every request.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

// BenchmarkPost is the adapter's request path in process, for the
// allocations per takedown: POST /v1/takedowns on the memory hub and
// store, a commander that hands each command to an item service
// answering with one takedown.confirmed through the Recorder (as the
// hub's consumer would), and a response writer that cannot be hijacked.
// allocs/op and B/op are per takedown; they include the Recorder's and
// the hub's work for the confirmation.
func BenchmarkPost(b *testing.B) {
	mem := hub.NewMemory(hub.MemoryConfig{})
	h, err := hub.New(hub.Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	defer h.Shutdown(context.Background())
	store := NewMemoryStore(time.Hour, 0)
	rec := &Recorder{Store: store, Next: h, Trust: testTrust}
	cmds := make(chan producers.CloudEvent, 16)
	defer close(cmds)
	go func() {
		for cmd := range cmds {
			ch := []string{"corr:" + cmd.CorrelationID}
			if err := rec.Publish(context.Background(), ch, outcome(TypeConfirmed, cmd,
				`{"item_id":"item-1","removed_from":["group-1"],"confirmed_at":"2026-11-22T00:00:00Z"}`)); err != nil {
				b.Error(err)
			}
		}
	}()
	cmd := &commander{answer: func(ev producers.CloudEvent) { cmds <- ev }}
	a, err := New(Config{CommandsTopic: "takedown.commands", Trust: testTrust, Timeout: time.Minute}, h, store, cmd, allowAll{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	p := &auth.Principal{Name: "police", Role: auth.RolePolice}
	body := []byte(`{"item_id":"item-1","reason":"bench","authority_ref":"BENCH-1"}`)
	rb := &rewindBody{}
	req, _ := http.NewRequestWithContext(auth.WithPrincipal(context.Background(), p), http.MethodPost, "/v1/takedowns", rb)
	req.Header.Set("Content-Type", "application/json")
	w := &benchWriter{hdr: http.Header{}}
	post := func() {
		rb.Reset(body)
		req.Body, req.ContentLength = rb, int64(len(body))
		w.reset()
		a.Post(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	post() // warm up
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		post()
		cmd.mu.Lock()
		cmd.attempts = cmd.attempts[:0]
		cmd.mu.Unlock()
	}
}

var _ io.ReadCloser = (*rewindBody)(nil)
