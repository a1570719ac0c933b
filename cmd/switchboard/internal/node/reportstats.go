package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard/switchboard/hub"
)

// Bounds of the report counts behind GET /v1/stats/reports.
const (
	// statsMinutes is how many one-minute buckets the ring keeps: an hour.
	statsMinutes = 60
	// statsMaxReasons is how many distinct reasons are counted by name;
	// later new reasons are counted under statsOther.
	statsMaxReasons = 32
	// statsMaxReasonLen is the longest reason counted by name.
	statsMaxReasonLen = 64
	// statsOther and statsNoReason name the folded and the missing reasons.
	statsOther    = "other"
	statsNoReason = "unspecified"
	// statsQueue is how many reports may wait for Run to count them.
	statsQueue = 1024
)

// reportStats counts the item.reported events of the reports channel per
// minute over the last hour and by reason since the node started, for the
// moderator page's chart, so the counts outlive a page. It follows the
// channel with Hub.Follow (no client queue, no goroutine per event): the
// follow's callback passes each report to Run's one goroutine through a
// bounded channel, so the JSON decode stays off the channel's lock. Memory
// is bounded: that channel, a ring of statsMinutes buckets and at most
// statsMaxReasons+2 reasons.
//
// Each node counts every report (every node follows the channel through
// the backplane), so any node answers the same. The first follow starts
// from the oldest event history still holds, so a restarted node with a
// history that outlives it (Redis) counts what history has; events are
// placed by their own time (reported_at, else the CloudEvents time).
type reportStats struct {
	hub     *hub.Hub
	channel string
	log     *slog.Logger
	now     func() time.Time

	// The current follow; only follow, end and Run (after the node's
	// first follow) touch them.
	stop     func()
	done     <-chan struct{}
	followed bool
	live     atomic.Bool
	in       chan *hub.Event // reports for Run to count

	mu      sync.Mutex
	since   time.Time
	ring    [statsMinutes]minuteCount
	reasons map[string]uint64
	total   uint64
}

// minuteCount is one bucket of the ring: the reports of one minute, named
// by its Unix minute; a bucket whose minute has left the hour is stale.
type minuteCount struct {
	minute int64
	count  uint64
}

func newReportStats(h *hub.Hub, channel string, log *slog.Logger) *reportStats {
	return &reportStats{hub: h, channel: channel, log: log, now: time.Now, reasons: map[string]uint64{}, in: make(chan *hub.Event, statsQueue)}
}

// follow starts following the channel: the first time from the oldest
// event history holds, later live. The node calls it once before its
// consumer runs, so a report is never missed for want of a listener.
func (s *reportStats) follow(ctx context.Context) error {
	after := &hub.Oldest
	if s.followed {
		after = nil
	}
	stop, done, err := s.hub.Follow(ctx, s.channel, after, s.observe)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.since.IsZero() {
		s.since = s.now()
	}
	s.mu.Unlock()
	s.followed = true
	s.stop, s.done = stop, done
	s.live.Store(true)
	return nil
}

// end stops the current follow.
func (s *reportStats) end() {
	if s.stop != nil {
		s.stop()
		s.stop, s.done = nil, nil
		s.live.Store(false)
	}
}

// following is how many hub clients the stats hold: 1 while following.
func (s *reportStats) following() int {
	if s.live.Load() {
		return 1
	}
	return 0
}

// Run keeps following the channel until ctx ends or the hub shuts down. A
// follow that ends early (or cannot start) is started again, live from
// then on; after a failure, or a follow that lasted less than the pause, it
// waits a pause first, which doubles up to a minute.
func (s *reportStats) Run(ctx context.Context) error {
	defer s.end()
	pause := time.Second
	wait := func() bool {
		t := time.NewTimer(pause)
		defer t.Stop()
		for {
			select {
			case ev := <-s.in:
				s.count(ev)
			case <-t.C:
				pause = min(2*pause, time.Minute)
				return true
			case <-ctx.Done():
				return false
			}
		}
	}
	for {
		if s.stop == nil {
			err := s.follow(ctx)
			if errors.Is(err, hub.ErrShutdown) || ctx.Err() != nil {
				return nil
			}
			if err != nil {
				s.log.Warn("report stats: cannot follow", "channel", s.channel, "err", err)
				if !wait() {
					return nil
				}
				continue
			}
		}
		began := time.Now()
	counting:
		for {
			select {
			case ev := <-s.in:
				s.count(ev)
			case <-s.done:
				break counting
			case <-ctx.Done():
				return nil
			}
		}
		s.end()
		if time.Since(began) >= pause {
			pause = time.Second
		} else if !wait() {
			return nil
		}
	}
}

// observe takes one event of the channel. It runs under the hub's lock,
// so it hands the report to Run to decode and count; only when Run is
// statsQueue reports behind does it count one itself, so none is lost.
func (s *reportStats) observe(ev *hub.Event) {
	if ev == nil || ev.Type != "item.reported" {
		return // a gap notice, or another type routed here
	}
	select {
	case s.in <- ev:
	default:
		s.count(ev)
	}
}

// count decodes a report's reason and time and counts it.
func (s *reportStats) count(ev *hub.Event) {
	// One typed pass; only data that is not an object of the usual shape
	// takes the slower way.
	var ce struct {
		Time string `json:"time"`
		Data struct {
			Reason     json.RawMessage `json:"reason"`
			ReportedAt string          `json:"reported_at"`
		} `json:"data"`
	}
	if json.Unmarshal(ev.JSON, &ce) != nil {
		var loose struct {
			Time string          `json:"time"`
			Data json.RawMessage `json:"data"`
		}
		ce.Data.Reason, ce.Data.ReportedAt = nil, ""
		if json.Unmarshal(ev.JSON, &loose) == nil {
			ce.Time = loose.Time
			var d map[string]json.RawMessage
			if json.Unmarshal(loose.Data, &d) == nil {
				ce.Data.Reason = d["reason"]
			}
		}
	}
	at := s.now()
	for _, v := range []string{ce.Data.ReportedAt, ce.Time} {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			at = t
			break
		}
	}
	var reason string
	if len(ce.Data.Reason) > 0 && ce.Data.Reason[0] == '"' {
		json.Unmarshal(ce.Data.Reason, &reason)
	}
	s.add(at, reason)
}

// add counts one report made at at with reason. A report from the future
// (a skewed clock) counts in the current minute; one older than the hour
// counts only by reason.
func (s *reportStats) add(at time.Time, reason string) {
	now := s.now()
	cur := now.Unix() / 60
	m := min(at.Unix()/60, cur)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	s.reasons[s.reasonKey(reason)]++
	if m <= cur-statsMinutes {
		return
	}
	b := &s.ring[m%statsMinutes]
	if b.minute != m {
		*b = minuteCount{minute: m}
	}
	b.count++
}

// reasonKey is the name reason is counted under. The caller holds s.mu.
func (s *reportStats) reasonKey(reason string) string {
	switch {
	case reason == "":
		return statsNoReason
	case len(reason) > statsMaxReasonLen || !utf8.ValidString(reason):
		return statsOther
	}
	if _, ok := s.reasons[reason]; ok {
		return reason
	}
	named := len(s.reasons)
	for _, k := range []string{statsOther, statsNoReason} {
		if _, ok := s.reasons[k]; ok {
			named--
		}
	}
	if named >= statsMaxReasons {
		return statsOther
	}
	return reason
}

// reportStatsJSON is the body of GET /v1/stats/reports.
type reportStatsJSON struct {
	Channel   string        `json:"channel"`
	Now       time.Time     `json:"now"`
	Since     *time.Time    `json:"since,omitempty"`
	Minutes   []minuteJSON  `json:"minutes"`
	LastHour  uint64        `json:"last_hour"`
	Total     uint64        `json:"total"`
	Reasons   []reasonCount `json:"reasons"`
	ReasonCap int           `json:"reasons_cap"`
}

type minuteJSON struct {
	Start time.Time `json:"start"`
	Count uint64    `json:"count"`
}

type reasonCount struct {
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// snapshot returns the counts: the last statsMinutes minutes, oldest
// first and ending with the current one, and the reasons, most counted
// first.
func (s *reportStats) snapshot() reportStatsJSON {
	now := s.now().UTC()
	cur := now.Unix() / 60
	out := reportStatsJSON{Channel: s.channel, Now: now, ReasonCap: statsMaxReasons, Minutes: make([]minuteJSON, 0, statsMinutes)}
	s.mu.Lock()
	if !s.since.IsZero() {
		since := s.since.UTC()
		out.Since = &since
	}
	for m := cur - statsMinutes + 1; m <= cur; m++ {
		var n uint64
		if b := s.ring[m%statsMinutes]; b.minute == m {
			n = b.count
		}
		out.Minutes = append(out.Minutes, minuteJSON{Start: time.Unix(m*60, 0).UTC(), Count: n})
		out.LastHour += n
	}
	out.Total = s.total
	out.Reasons = make([]reasonCount, 0, len(s.reasons))
	for r, n := range s.reasons {
		out.Reasons = append(out.Reasons, reasonCount{r, n})
	}
	s.mu.Unlock()
	slices.SortFunc(out.Reasons, func(a, b reasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// ServeHTTP answers GET /v1/stats/reports.
func (s *reportStats) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s.snapshot())
}
