package takedown

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/tracing"
)

// TestAnswerBytes: the structs that write the confirmed answer and the
// takedown command's data write the bytes of the maps they replace.
func TestAnswerBytes(t *testing.T) {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, removed := range [][]string{{}, {"group-1", "<g&2>"}} {
		got := enc(&confirmedBody{ConfirmedAt: "2026-11-22T00:00:00Z", CorrelationID: "c-1", ItemID: "item-1", RemovedFrom: removed, Status: StatusConfirmed})
		want := enc(map[string]any{"correlation_id": "c-1", "item_id": "item-1", "status": StatusConfirmed, "removed_from": removed, "confirmed_at": "2026-11-22T00:00:00Z"})
		if got != want {
			t.Errorf("answer:\n%s\nwant\n%s", got, want)
		}
	}
	for _, ref := range []string{"", "REF-1"} {
		rec := &Record{EventID: "e", CorrelationID: "c", ItemID: "item-1", Reason: "a \"reason\" <b>", AuthorityRef: ref, Principal: "police"}
		got := enc(command(&Command{Type: TypeRequested}, rec).Data)
		m := map[string]string{"item_id": rec.ItemID, "reason": rec.Reason, "requested_by": rec.Principal}
		if ref != "" {
			m["authority_ref"] = ref
		}
		if want := enc(m); got != want {
			t.Errorf("command data:\n%s\nwant\n%s", got, want)
		}
	}
}

// TestTwoUUIDs: a record's two identities are random UUIDs of version 4,
// written as uuid.NewString writes them.
func TestTwoUUIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		a, b := twoUUIDs()
		for _, s := range []string{a, b} {
			u, err := uuid.Parse(s)
			if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || u.String() != s || seen[s] {
				t.Fatalf("%q: %v %v %v", s, err, u.Version(), u.Variant())
			}
			seen[s] = true
		}
	}
}

// TestMemoryStoreKeepsReserved: MemoryStore keeps a reserved record
// itself, and every change after is made on a copy: a record once read
// never changes.
func TestMemoryStoreKeepsReserved(t *testing.T) {
	m := NewMemoryStore(time.Hour, 0)
	rec := &Record{CorrelationID: "c-1", ItemID: "item-1", Status: StatusPending, RemovedFrom: []string{}, CreatedAt: time.Now()}
	if ex, err := m.Reserve(t.Context(), rec); err != nil || ex != nil {
		t.Fatal(ex, err)
	}
	if got, _ := m.Get(t.Context(), "c-1"); got != rec {
		t.Fatal("Reserve did not keep the record")
	}
	if err := m.MarkPublished(t.Context(), "c-1"); err != nil {
		t.Fatal(err)
	}
	got, _ := m.Get(t.Context(), "c-1")
	if rec.Published || !got.Published || got == rec {
		t.Fatalf("marked in place: %v %v", rec.Published, got.Published)
	}
}

// TestPropagatedOnce: the trace context begin propagated is used again
// for the command only while the context holds the same span context;
// otherwise it is propagated anew.
func TestPropagatedOnce(t *testing.T) {
	a := tracing.Remote(context.Background(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v")
	b := tracing.Remote(context.Background(), "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00", "")
	parent, state := tracing.Propagated(a)
	p := propagated{sc: trace.SpanContextFromContext(a), parent: parent, state: state}
	if gp, gs := p.of(a); gp != parent || gs != state {
		t.Fatalf("same span context: %q %q, want %q %q", gp, gs, parent, state)
	}
	wp, ws := tracing.Propagated(b)
	if gp, gs := p.of(b); gp != wp || gs != ws || gp == parent {
		t.Fatalf("another span context: %q %q, want %q %q", gp, gs, wp, ws)
	}
	var none *propagated
	if gp, _ := none.of(a); gp != parent {
		t.Fatalf("no known context: %q", gp)
	}
}
