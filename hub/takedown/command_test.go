package takedown

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// testCommands are the built-in takedown and a declared restores command
// with a progress type, trusted from /itemsvc on their outcome topics.
func testCommands(t *testing.T) *Commands {
	t.Helper()
	td := Takedowns()
	td.OutcomeSources = []string{"/itemsvc"}
	cs, err := NewCommands([]Command{td, {
		Name: "restores", Roles: []auth.Role{auth.RoleModerator}, Topic: "item.commands", Type: "item.restore",
		Key: "item_id", Required: []string{"item_id"}, Optional: []string{"reason"},
		OutcomeTopic: "item.events", OutcomeSources: []string{"/itemsvc"}, Progress: []string{"item.restoring"},
		Outcomes: []Rule{
			{Type: "item.restored", Status: 200},
			{Type: "item.restore_rejected", When: map[string]string{"reason": "not_found"}, Status: 404},
			{Type: "item.restore_rejected", Status: 409},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func commandEvent(typ, topic, corr, subject, data string) *hub.Event {
	js := `{"specversion":"1.0","id":"e-` + typ + `","source":"/itemsvc","type":"` + typ + `","correlationid":"` + corr + `","data":` + data + `}`
	return &hub.Event{ID: "e-" + typ, Source: "/itemsvc", Type: typ, Subject: subject, CorrelationID: corr, Topic: topic, JSON: []byte(js)}
}

// TestStoresDeclaredCommand: a declared command's record keeps its
// progress, is decided by the first outcome rule that matches, and its
// idempotency keys are its own, on every store.
func TestStoresDeclaredCommand(t *testing.T) {
	run := func(t *testing.T, s Store) {
		ctx := t.Context()
		cs := testCommands(t)
		restores := cs.Lookup("restores")
		in, err := restores.read([]byte(`{"item_id":"item-1","reason":"appeal"}`))
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecord("p", in, "k")
		if ex, err := s.Reserve(ctx, rec); ex != nil || err != nil {
			t.Fatalf("reserve: %v %v", ex, err)
		}
		// The same principal and key for a takedown is another request.
		td := newRecord("p", &input{cmd: cs.Lookup(TakedownsName), key: "item-1", req: &Request{ItemID: "item-1", Reason: "x"}, hash: "h"}, "k")
		if ex, err := s.Reserve(ctx, td); ex != nil || err != nil {
			t.Fatalf("a takedown with a restore's key: %v %v", ex, err)
		}
		// And for the restores command, the same one.
		if ex, _ := s.Reserve(ctx, newRecord("p", in, "k")); ex == nil || ex.CorrelationID != rec.CorrelationID {
			t.Fatalf("the restore's key again: %+v", ex)
		}
		id := rec.CorrelationID
		var ue *UntrustedError
		// A takedown's outcome type does not move a restore.
		if err := s.apply(ctx, commandEvent(TypeConfirmed, "takedown.events", id, "item-1", `{"item_id":"item-1"}`), cs.judge); !errors.As(err, &ue) || ue.Reason != ReasonUnknown {
			t.Fatalf("a takedown outcome for a restore: %v", err)
		}
		// From its own topic only.
		if err := s.apply(ctx, commandEvent("item.restored", "takedown.events", id, "item-1", `{"item_id":"item-1"}`), cs.judge); !errors.As(err, &ue) || ue.Reason != ReasonTopic {
			t.Fatalf("another topic: %v", err)
		}
		if err := s.apply(ctx, commandEvent("item.restored", "item.events", id, "item-2", `{"item_id":"item-2"}`), cs.judge); !errors.As(err, &ue) || ue.Reason != ReasonItem {
			t.Fatalf("another item: %v", err)
		}
		if err := s.apply(ctx, commandEvent("item.restoring", "item.events", id, "item-1", `{"item_id":"item-1","step":1}`), cs.judge); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Get(ctx, id)
		if got.Final() || len(got.Progress) != 1 || !strings.Contains(string(got.Progress[0]), `"step":1`) || !got.Published {
			t.Fatalf("after progress: %+v", got)
		}
		// The first rule that matches: reason other than not_found is 409.
		if err := s.apply(ctx, commandEvent("item.restore_rejected", "item.events", id, "item-1", `{"item_id":"item-1","reason":"locked"}`), cs.judge); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Get(ctx, id)
		if got.Status != StatusRejected || got.Code != 409 || got.RejectReason != "locked" || got.Command != "restores" {
			t.Fatalf("after the outcome: %+v", got)
		}
		// Final stays final.
		s.apply(ctx, commandEvent("item.restored", "item.events", id, "item-1", `{"item_id":"item-1"}`), cs.judge)
		if got, _ = s.Get(ctx, id); got.Code != 409 {
			t.Fatalf("a final record changed: %+v", got)
		}
		ev := command(restores, got)
		if ev.Type != "item.restore" || ev.Subject != "item-1" || ev.Data.(map[string]string)["reason"] != "appeal" || ev.Data.(map[string]string)["requested_by"] != "p" {
			t.Fatalf("command event %+v", ev)
		}
	}
	t.Run("memory", func(t *testing.T) { run(t, NewMemoryStore(time.Hour, 0)) })
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			c := srv.Client()
			defer c.Close()
			run(t, NewRedisStore(c, time.Hour, srv.Prefix))
		})
	}
}

// TestCommandDecode: a declared command's body is exactly its members,
// strings, the required ones not blank, the key a channel key.
func TestCommandDecode(t *testing.T) {
	c := testCommands(t).Lookup("restores")
	for body, want := range map[string]string{
		`{"item_id":"i-1","x":"y"}`:         `unknown member "x"`,
		`{"item_id":"i-1","x":1}`:           `unknown member "x"`,
		`{"item_id":"i-1","reason":null}`:   `"reason" must be a string`,
		`{"item_id":"i-1","item_id":"i-2"}`: `"item_id" appears more than once`,
		`{"item_id":1}`:                     `"item_id" must be a string`,
		`{"reason":"r"}`:                    `"item_id" is required`,
		`{"item_id":"  "}`:                  `"item_id" is required`,
		`{"item_id":"a:b"}`:                 `"item_id" must be 1 to 128`,
		`null`:                              `JSON object`,
		`{"item_id":"i","reason":"` + strings.Repeat("r", 2001) + `"}`: `"reason" is over`,
	} {
		if _, err := c.read([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40s: %v, want %s", body, err, want)
		}
	}
	a, _ := c.read([]byte(`{"item_id":"i-1","reason":"r"}`))
	b, _ := c.read([]byte(`{"reason":"r","item_id":"i-1"}`))
	d, _ := c.read([]byte(`{"item_id":"i-1"}`))
	if a.hash != b.hash || a.hash == d.hash || a.key != "i-1" {
		t.Fatalf("hashes %s %s %s", a.hash, b.hash, d.hash)
	}
}

// TestBodyHashOnlyWithKey: a takedown's body hash is worked out and kept
// only under an Idempotency-Key, the only place it is compared; two
// bodies that differ still differ there.
func TestBodyHashOnlyWithKey(t *testing.T) {
	c := builtinTakedowns.list[0]
	a, err := c.read([]byte(`{"item_id":"i-1","reason":"r"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.read([]byte(`{"item_id":"i-1","reason":"other"}`))
	if rec := newRecord("p", a, ""); rec.BodyHash != "" {
		t.Fatalf("hash %q without a key", rec.BodyHash)
	}
	ra, rb := newRecord("p", a, "k"), newRecord("p", b, "k")
	if ra.BodyHash == "" || ra.BodyHash == rb.BodyHash || ra.BodyHash != newRecord("p", a, "k2").BodyHash {
		t.Fatalf("hashes %q %q", ra.BodyHash, rb.BodyHash)
	}
}
