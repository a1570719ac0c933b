package takedown

import (
	"slices"
	"sync/atomic"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
)

// DefaultOutcomeSources are the CloudEvents sources whose outcomes are
// trusted when takedown.outcome_sources is not set: the simulated item
// service.
var DefaultOutcomeSources = []string{producers.ItemServiceSource}

// Why an outcome event was not trusted (the reason label of
// switchboard_untrusted_outcomes_total).
const (
	// ReasonTopic: read from a topic other than the declared outcome topic.
	ReasonTopic = "topic"
	// ReasonSource: its source is not one of the outcome sources.
	ReasonSource = "source"
	// ReasonUnknown: no takedown this deployment published has its
	// correlation ID (or it expired).
	ReasonUnknown = "unknown_correlation"
	// ReasonItem: it is about another item than the takedown's.
	ReasonItem = "item"
	// ReasonMalformed: its data cannot be read as an outcome.
	ReasonMalformed = "malformed"
)

// Reasons lists every reason, for metrics that show each from the start.
var Reasons = []string{ReasonTopic, ReasonSource, ReasonUnknown, ReasonItem, ReasonMalformed}

// UntrustedError says why an outcome event may not change a takedown.
type UntrustedError struct{ Reason string }

func (e *UntrustedError) Error() string { return "takedown: untrusted outcome: " + e.Reason }

// about checks that an outcome names itemID: its data's item_id, or its
// subject when the data has none, and a subject that does not contradict.
func (o Outcome) about(itemID string) error {
	id := o.ItemID
	if id == "" {
		id = o.Subject
	}
	if id != itemID || (o.Subject != "" && o.Subject != itemID) {
		return &UntrustedError{Reason: ReasonItem}
	}
	return nil
}

// Trust decides, before the outcome store is asked, whether an outcome
// event comes from where outcomes come from: the declared outcome topic and
// one of the outcome sources. The store then checks that the correlation
// ID is one this deployment published and that the item is that
// takedown's. The zero Trust accepts nothing.
type Trust struct {
	// Topic is the declared outcome topic (takedown.events by default).
	Topic string
	// Sources are the trusted CloudEvents sources.
	Sources []string
}

// check returns why ev is not trusted, or nil. ev.Topic is empty for an
// event that came from another node's consumption through the backplane:
// that node checked the topic; the source and the store are checked here
// too.
func (t Trust) check(ev *hub.Event, needTopic bool) error {
	if needTopic && ev.Topic != t.Topic {
		return &UntrustedError{Reason: ReasonTopic}
	}
	if !slices.Contains(t.Sources, ev.Source) {
		return &UntrustedError{Reason: ReasonSource}
	}
	return nil
}

// untrustedCounts counts untrusted outcomes by reason.
type untrustedCounts struct {
	n [5]atomic.Uint64
}

func (c *untrustedCounts) add(reason string) {
	if i := slices.Index(Reasons, reason); i >= 0 {
		c.n[i].Add(1)
	}
}

func (c *untrustedCounts) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(Reasons))
	for i, r := range Reasons {
		out[r] = c.n[i].Load()
	}
	return out
}
