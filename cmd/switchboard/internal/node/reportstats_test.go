package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// statsAt returns report stats whose clock reads *now.
func statsAt(now *time.Time) *reportStats {
	s := newReportStats(nil, "reports", slog.New(slog.DiscardHandler))
	s.now = func() time.Time { return *now }
	return s
}

func minuteCounts(snap reportStatsJSON) map[string]uint64 {
	m := map[string]uint64{}
	for _, b := range snap.Minutes {
		if b.Count > 0 {
			m[b.Start.Format("15:04")] = b.Count
		}
	}
	return m
}

// The ring keeps exactly the last hour: a bucket whose minute left the
// hour is neither shown nor added to when its slot comes round again.
func TestReportStatsMinuteRing(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC)
	s := statsAt(&now)
	s.add(now, "spam")
	s.add(now.Add(-59*time.Minute), "spam")            // 09:01, the oldest minute shown
	s.add(now.Add(-60*time.Minute), "spam")            // 09:00: left the hour, counted by reason only
	s.add(now.Add(10*time.Minute), "scam")             // the future: the current minute
	s.add(now.Add(-30*time.Minute-20*time.Second), "") // 09:30
	snap := s.snapshot()
	if len(snap.Minutes) != statsMinutes {
		t.Fatalf("%d minutes, want %d", len(snap.Minutes), statsMinutes)
	}
	if first, last := snap.Minutes[0].Start, snap.Minutes[statsMinutes-1].Start; first.Format("15:04") != "09:01" || last.Format("15:04") != "10:00" {
		t.Fatalf("minutes %s … %s, want 09:01 … 10:00", first, last)
	}
	want := map[string]uint64{"10:00": 2, "09:01": 1, "09:30": 1}
	if got := minuteCounts(snap); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("minutes %v, want %v", got, want)
	}
	if snap.LastHour != 4 || snap.Total != 5 {
		t.Fatalf("last hour %d, total %d; want 4, 5", snap.LastHour, snap.Total)
	}

	// An hour and a half later every bucket is stale; new reports reuse
	// the slots without adding to what they held.
	now = now.Add(90 * time.Minute) // 11:30:30
	if got := minuteCounts(s.snapshot()); len(got) != 0 {
		t.Fatalf("stale minutes shown: %v", got)
	}
	s.add(now, "spam")                      // slot of 10:30, 09:30
	s.add(now.Add(-29*time.Minute), "spam") // 11:01: slot of 10:01, 09:01
	s.add(now.Add(-1000*time.Hour), "spam") // long ago: by reason only
	want = map[string]uint64{"11:30": 1, "11:01": 1}
	snap = s.snapshot()
	if got := minuteCounts(snap); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after wrapping: minutes %v, want %v", got, want)
	}
	if snap.LastHour != 2 || snap.Total != 8 {
		t.Fatalf("after wrapping: last hour %d, total %d; want 2, 8", snap.LastHour, snap.Total)
	}
	// Many minutes of reports: still one bucket per minute of the hour.
	for i := range 5000 {
		s.add(now.Add(-time.Duration(i)*time.Minute), "spam")
	}
	if len(s.ring) != statsMinutes || s.snapshot().LastHour != 60+2 {
		t.Fatalf("ring of %d, last hour %d", len(s.ring), s.snapshot().LastHour)
	}
}

// Distinct reasons are capped: past statsMaxReasons, new ones fold into
// "other"; reasons already counted stay counted by name; an oversized or
// invalid reason is "other", a missing one "unspecified".
func TestReportStatsReasonCap(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := statsAt(&now)
	s.add(now, "")
	s.add(now, strings.Repeat("x", statsMaxReasonLen+1))
	s.add(now, "bad\xffutf8")
	for i := range 10 * statsMaxReasons {
		s.add(now, fmt.Sprintf("reason-%03d", i))
	}
	s.add(now, "reason-000") // known: by name
	s.add(now, "brand-new")  // past the cap: other
	snap := s.snapshot()
	if len(snap.Reasons) != statsMaxReasons+2 || len(s.reasons) != statsMaxReasons+2 {
		t.Fatalf("%d reasons kept, want %d: %v", len(snap.Reasons), statsMaxReasons+2, snap.Reasons)
	}
	got := map[string]uint64{}
	for _, r := range snap.Reasons {
		got[r.Reason] = r.Count
	}
	wantOther := uint64(2 + 9*statsMaxReasons + 1)
	if got[statsOther] != wantOther || got[statsNoReason] != 1 || got["reason-000"] != 2 || got["brand-new"] != 0 {
		t.Fatalf("other %d (want %d), unspecified %d, reason-000 %d, brand-new %d", got[statsOther], wantOther, got[statsNoReason], got["reason-000"], got["brand-new"])
	}
	if snap.Reasons[0].Reason != statsOther || snap.Reasons[1].Reason != "reason-000" {
		t.Fatalf("reasons not most counted first: %v", snap.Reasons[:3])
	}
}

// The stats follow a real hub: history first, then live, with events of
// another type, gap notices and malformed data counted or ignored sanely.
func TestReportStatsFollowsHub(t *testing.T) {
	mem := hub.NewMemory(hub.MemoryConfig{})
	defer mem.Close()
	h, err := hub.New(hub.Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	pub := func(id, typ string, data any) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": id, "source": "/test", "type": typ, "time": at.Format(time.RFC3339), "data": data})
		if err := h.Publish(t.Context(), []string{"reports"}, &hub.Event{ID: id, Source: "/test", Type: typ, JSON: b}); err != nil {
			t.Fatal(err)
		}
	}
	pub("h1", "item.reported", map[string]any{"item_id": "item-1", "reason": "spam"}) // before the follow: from history
	s := newReportStats(h, "reports", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitUntil(t, "the history counted", func() bool { return s.snapshot().Total == 1 })
	pub("l1", "item.reported", map[string]any{"item_id": "item-2", "reason": "scam", "reported_at": at.Format(time.RFC3339Nano)})
	pub("l2", "takedown.requested", map[string]any{"item_id": "item-2", "reason": "spam"})
	pub("l3", "item.reported", "not an object")
	pub("l4", "item.reported", map[string]any{"reason": 7})
	waitUntil(t, "the live reports counted", func() bool { return s.snapshot().Total == 4 })
	snap := s.snapshot()
	if snap.LastHour != 4 || snap.Since == nil {
		t.Fatalf("last hour %d, since %v", snap.LastHour, snap.Since)
	}
	if fmt.Sprint(snap.Reasons) != fmt.Sprint([]reasonCount{{statsNoReason, 2}, {"scam", 1}, {"spam", 1}}) {
		t.Fatalf("reasons %v", snap.Reasons)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := h.Clients(); n != 0 {
		t.Fatalf("%d hub clients left after Run returned", n)
	}
	// Shutdown of the hub ends a running follow, and Run with it.
	go func() { done <- s.Run(t.Context()) }()
	waitUntil(t, "following again", func() bool { return h.Clients() == 1 })
	if err := h.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// With Run not draining, observe queues statsQueue reports and counts the
// rest itself: none is lost, and the queue never grows.
func TestReportStatsQueueFull(t *testing.T) {
	now := time.Now()
	s := statsAt(&now)
	js := []byte(`{"specversion":"1.0","id":"x","source":"/t","type":"item.reported","data":{"reason":"spam"}}`)
	for range statsQueue + 10 {
		s.observe(&hub.Event{ID: "x", Source: "/t", Type: "item.reported", JSON: js})
	}
	if len(s.in) != statsQueue || s.snapshot().Total != 10 {
		t.Fatalf("queued %d, counted %d", len(s.in), s.snapshot().Total)
	}
	for len(s.in) > 0 {
		s.count(<-s.in)
	}
	if snap := s.snapshot(); snap.Total != statsQueue+10 || snap.LastHour != statsQueue+10 {
		t.Fatalf("total %d, last hour %d", snap.Total, snap.LastHour)
	}
}

// GET /v1/stats/reports on a node: moderators only, and the counts of the
// reports the node consumed.
func TestReportStatsEndpoint(t *testing.T) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	now := time.Now()
	produce(t, a.kafkaAddr,
		pageReport("st-1", "item-1", "user-1", "spam", now),
		pageReport("st-2", "item-2", "user-2", "spam", now),
		pageReport("st-3", "item-3", "user-3", "counterfeit", now))
	var m map[string]any
	waitUntil(t, "three reports counted", func() bool {
		var resp *http.Response
		resp, m = get(t, a, modToken, "/v1/stats/reports")
		return resp.StatusCode == http.StatusOK && m["total"] == 3.0
	})
	if m["last_hour"] != 3.0 || len(m["minutes"].([]any)) != statsMinutes {
		t.Fatalf("stats %v", m)
	}
	if r := m["reasons"].([]any); fmt.Sprint(r) != "[map[count:2 reason:spam] map[count:1 reason:counterfeit]]" {
		t.Fatalf("reasons %v", r)
	}
	if resp, _ := get(t, a, policeToken, "/v1/stats/reports"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("police: %d, want 403", resp.StatusCode)
	}
	if resp, _ := get(t, a, "", "/v1/stats/reports"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}
}

// BenchmarkReportStatsCount is what decoding and counting one report
// costs (Run does it, off the channel's lock).
func BenchmarkReportStatsCount(b *testing.B) {
	s := newReportStats(nil, "reports", slog.New(slog.DiscardHandler))
	js, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": "r-1", "source": "/platform", "type": "item.reported", "subject": "item-42",
		"time": time.Now().UTC().Format(time.RFC3339Nano), "datacontenttype": "application/json",
		"data": map[string]any{"item_id": "item-42", "reporter_id": "user-1234", "reason": "counterfeit", "reported_at": time.Now().UTC().Format(time.RFC3339Nano)}})
	ev := &hub.Event{ID: "r-1", Source: "/platform", Type: "item.reported", JSON: js}
	b.ReportAllocs()
	for b.Loop() {
		s.count(ev)
	}
}
