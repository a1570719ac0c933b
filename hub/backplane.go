package hub

import "context"

// Entry is one event at one position of one channel's log.
type Entry struct {
	Channel string
	Pos     Position
	Event   *Event
	// Siblings are the positions the same publish gave the event in every
	// channel it went to (this one included), shared by those entries. A
	// stream over several of them sends the event once and moves all their
	// positions together. Nil when unknown.
	Siblings []ChannelPos
	// Resync, with no event, tells the channel's subscribers that
	// announcements may have been lost (a backplane connection dropped):
	// each re-reads history after the last entry it queued.
	Resync bool
}

// ChannelPos is a channel and a position in it.
type ChannelPos struct {
	Channel string
	Pos     Position
}

// Oldest is the position "before everything history holds": a subscriber
// that starts there receives the channel's whole retained history.
var Oldest = Position{}

// Replay is what a history read found for one channel.
type Replay struct {
	// Entries are the events after the requested position, oldest first.
	Entries []Entry
	// Top is the position of the newest event in the log when it was read
	// (offset 0 in the current epoch for an empty log). A subscriber that
	// read this replay is at Top.
	Top Position
	// Gap is true when history could not cover the requested position: its
	// epoch is gone, or the events after it have left history.
	Gap bool
}

// Backplane holds every channel's log and carries new entries to the nodes
// that listen to them. The memory backplane serves one node; a shared one
// (Redis) lets any node serve any client.
type Backplane interface {
	// Publish appends ev to the log of every channel in channels, then
	// announces each new entry to the channel's listeners on every node. It
	// returns once the logs hold the event, so the caller may commit the
	// event's source offset.
	Publish(ctx context.Context, channels []string, ev *Event) error
	// Read returns channel's entries after *after (none when after is nil)
	// and the log's top. Entries and Top are read in one consistent step.
	// After == &Oldest asks for every entry history still holds, never a
	// gap.
	Read(ctx context.Context, channel string, after *Position) (Replay, error)
	// Listen makes deliver receive channel's new entries, in offset order,
	// until the returned cancel is called. It returns once delivery is
	// active, so an entry appended after Listen returns is never missed.
	// deliver must not block.
	Listen(ctx context.Context, channel string, deliver func(Entry)) (cancel func(), err error)
}

// Publication is one event and the channels it goes to.
type Publication struct {
	Channels []string
	Event    *Event
}

// BatchPublisher is an optional ability of a Backplane (and of what passes
// events on to one): it publishes several events at once, in order, each as
// Publish would, so that a shared backplane takes them in one round trip.
// Each channel's log gets the batch's events in the batch's order. On an
// error some of the events may be in already: publishing the batch again
// is safe (Publish is idempotent).
type BatchPublisher interface {
	PublishBatch(ctx context.Context, batch []Publication) error
}

// HealthChecker is an optional ability of a Backplane: it reports whether the
// backplane is reachable (for /readyz).
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

// Closer is an optional ability of a Backplane that holds resources.
type Closer interface {
	Close() error
}
