package takedown

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
)

// len is how many calls wait.
func (w *waiting) len() int {
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		for _, c := range s.m {
			for ; c != nil; c = c.nextWaiting {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// lostNext is a Recorder's Next that passes nothing on: no corr: event
// reaches the hub, as when the backplane's announcement is still on its
// way (or lost).
type lostNext struct{ n atomic.Int32 }

func (l *lostNext) Publish(context.Context, []string, *hub.Event) error {
	l.n.Add(1)
	return nil
}

// TestRecorderWakesHeldRequests: a held request is answered as soon as
// this node's Recorder stored its outcome, without its corr: event (Next
// here passes nothing on), in the handler and once handed off; every call
// waiting on the ID is woken; an untrusted outcome wakes nobody into a
// wrong answer; and no call is left registered, answered, timed out or
// hung up. Without Wake, the same request times out: the wake-up is what
// answered it.
func TestRecorderWakesHeldRequests(t *testing.T) {
	confirmed := func(cmd producers.CloudEvent) *hub.Event {
		return outcome(TypeConfirmed, cmd, `{"item_id":"`+cmd.Subject+`","removed_from":["g"],"confirmed_at":"2026-11-22T00:00:00Z"}`)
	}
	setup := func(t *testing.T, wake bool, cfg Config) (*rig, *lostNext, chan producers.CloudEvent) {
		r := newRig(t, cfg)
		lost := &lostNext{}
		r.rec.Next = lost
		if !wake {
			r.rec.Wake = nil
		}
		cmds := make(chan producers.CloudEvent, 8)
		r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
		return r, lost, cmds
	}
	next := func(t *testing.T, cmds chan producers.CloudEvent) producers.CloudEvent {
		t.Helper()
		select {
		case cmd := <-cmds:
			return cmd
		case <-time.After(10 * time.Second):
			t.Fatal("no command published")
			return producers.CloudEvent{}
		}
	}

	t.Run("in the handler", func(t *testing.T) {
		r, lost, cmds := setup(t, true, Config{Timeout: time.Hour, HandOffAfter: time.Hour})
		type answer struct {
			code int
			body map[string]any
		}
		got := make(chan answer, 1)
		go func() {
			resp, m := r.post(t, `{"item_id":"item-1","reason":"x"}`)
			got <- answer{resp.StatusCode, m}
		}()
		cmd := next(t, cmds)
		waitFor(t, func() bool { return r.a.waiting.len() == 1 })
		// A forged rejection first: it changes nothing, so a call it woke
		// would find the takedown pending and go on waiting.
		forged := outcome(TypeRejected, cmd, `{"item_id":"item-1","reason":"not_found"}`)
		forged.Source = "/evil"
		if err := r.rec.PublishBatch(t.Context(), []hub.Publication{{Channels: []string{"corr:" + cmd.CorrelationID}, Event: forged}}); err != nil {
			t.Fatal(err)
		}
		if err := r.rec.PublishBatch(t.Context(), []hub.Publication{{Channels: []string{"corr:" + cmd.CorrelationID}, Event: confirmed(cmd)}}); err != nil {
			t.Fatal(err)
		}
		var a answer
		select {
		case a = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("not answered: the Recorder's wake-up did not reach the call")
		}
		if a.code != http.StatusOK || a.body["status"] != "confirmed" {
			t.Fatalf("%d %v", a.code, a.body)
		}
		if lost.n.Load() != 2 || r.a.hub.Watchers() != 0 {
			t.Fatalf("%d events passed on, %d watches", lost.n.Load(), r.a.hub.Watchers())
		}
		waitFor(t, func() bool { return r.a.waiting.len() == 0 })
	})

	t.Run("handed off, with a retry of its key", func(t *testing.T) {
		r, _, cmds := setup(t, true, Config{Timeout: time.Hour})
		body := `{"item_id":"item-2","reason":"x"}`
		first := rawPost(t, r.srv.URL, body, "Idempotency-Key", "k1")
		waitFor(t, func() bool { return r.a.handedOff() == 1 })
		cmd := next(t, cmds)
		retry := rawPost(t, r.srv.URL, body, "Idempotency-Key", "k1")
		waitFor(t, func() bool { return r.a.handedOff() == 2 && r.a.waiting.len() == 2 })
		if err := r.rec.Publish(t.Context(), []string{"corr:" + cmd.CorrelationID}, confirmed(cmd)); err != nil {
			t.Fatal(err)
		}
		for _, conn := range []net.Conn{first, retry} {
			resp, m := readAnswer(t, conn)
			if resp.StatusCode != http.StatusOK || m["correlation_id"] != cmd.CorrelationID {
				t.Fatalf("%d %v", resp.StatusCode, m)
			}
		}
		waitFor(t, func() bool { return r.a.Held() == 0 && r.a.handedOff() == 0 && r.a.waiting.len() == 0 })
	})

	t.Run("hang-up, deadline and refusal leave nothing registered", func(t *testing.T) {
		r, _, cmds := setup(t, true, Config{Timeout: time.Hour, MaxWait: time.Second})
		conn := rawPost(t, r.srv.URL, `{"item_id":"item-3","reason":"x"}`)
		waitFor(t, func() bool { return r.a.handedOff() == 1 && r.a.waiting.len() == 1 })
		next(t, cmds)
		conn.Close()
		waitFor(t, func() bool { return r.a.Held() == 0 && r.a.waiting.len() == 0 })
		resp, _ := r.post(t, `{"item_id":"item-4","reason":"x"}`, "Prefer", "wait=1")
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%d", resp.StatusCode)
		}
		waitFor(t, func() bool { return r.a.Held() == 0 && r.a.waiting.len() == 0 })
		r.cmd.failWith(errors.New("broker down"))
		if resp, _ := r.post(t, `{"item_id":"item-6","reason":"x"}`); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%d", resp.StatusCode)
		}
		waitFor(t, func() bool { return r.a.Held() == 0 && r.a.waiting.len() == 0 })
	})

	t.Run("without Wake the event is needed", func(t *testing.T) {
		r, _, cmds := setup(t, false, Config{Timeout: time.Hour, HandOffAfter: time.Hour})
		got := make(chan int, 1)
		go func() {
			resp, _ := r.post(t, `{"item_id":"item-5","reason":"x"}`)
			got <- resp.StatusCode
		}()
		cmd := next(t, cmds)
		waitFor(t, func() bool { return r.a.hub.Watchers() == 1 })
		ev := confirmed(cmd)
		if err := r.rec.Publish(t.Context(), []string{"corr:" + cmd.CorrelationID}, ev); err != nil {
			t.Fatal(err)
		}
		// Stored, and nothing to tell the call: no deadline, no event.
		if rec, err := r.store.Get(t.Context(), cmd.CorrelationID); err != nil || rec.Status != StatusConfirmed || r.a.Held() != 1 {
			t.Fatalf("%v %v, held %d", rec, err, r.a.Held())
		}
		if err := r.a.hub.Publish(t.Context(), []string{"corr:" + cmd.CorrelationID}, ev); err != nil {
			t.Fatal(err)
		}
		if code := <-got; code != http.StatusOK {
			t.Fatalf("%d", code)
		}
	})
}

// TestWaitingChains: calls on one ID are chained, and any of them leaves
// the chain alone, whatever its place; removing one twice is harmless.
func TestWaitingChains(t *testing.T) {
	var w waiting
	a, b, c, d := &call{id: "x"}, &call{id: "x"}, &call{id: "x"}, &call{id: "y"}
	for _, k := range []*call{a, b, c, d} {
		w.add(k)
	}
	if w.len() != 4 {
		t.Fatalf("%d waiting", w.len())
	}
	ids := func() []*call {
		var out []*call
		s := w.shard("x")
		s.mu.Lock()
		defer s.mu.Unlock()
		for k := s.m["x"]; k != nil; k = k.nextWaiting {
			out = append(out, k)
		}
		return out
	}
	w.remove(b) // the middle one
	if got := ids(); len(got) != 2 || got[0] != c || got[1] != a {
		t.Fatalf("%v", got)
	}
	w.remove(c) // the head
	w.remove(c)
	if got := ids(); len(got) != 1 || got[0] != a || w.len() != 2 {
		t.Fatalf("%v, %d waiting", got, w.len())
	}
	w.remove(a)
	w.remove(d)
	if w.len() != 0 || len(w.shard("x").m) != 0 || len(w.shard("y").m) != 0 {
		t.Fatalf("%d waiting", w.len())
	}
}
