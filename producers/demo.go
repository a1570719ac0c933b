package producers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"
)

// Demo generator defaults and vocabulary.
const (
	// DefaultDemoRate is the demo's reports per second when none is given.
	DefaultDemoRate = 3.0
	// DemoSource is the CloudEvents source of the demo's reports.
	DemoSource = "/switchboard/demo"
	// DemoItems is how many items the demo reports on: item-1 … item-DemoItems,
	// the simulated item service's catalogue.
	DemoItems = 1000
)

// demoReasons are the reasons a demo reporter picks from.
var demoReasons = []string{"spam", "counterfeit", "prohibited_item", "scam", "offensive", "duplicate", "wrong_category"}

// Publisher publishes one CloudEvent to a topic with a record key.
// *Producer satisfies it; tests use fakes.
type Publisher interface {
	Publish(ctx context.Context, topic, key string, ev CloudEvent) error
}

// ItemReported is the data of an item.reported event.
type ItemReported struct {
	ItemID     string `json:"item_id"`
	ReporterID string `json:"reporter_id"`
	Reason     string `json:"reason"`
	ReportedAt string `json:"reported_at"`
}

// ItemPosted is the data of an item.posted event: an item posted to a
// group, or to its author's followers' feed (then GroupID is empty and
// left out).
type ItemPosted struct {
	ItemID   string `json:"item_id"`
	GroupID  string `json:"group_id,omitempty"`
	AuthorID string `json:"author_id"`
	Title    string `json:"title"`
	PostedAt string `json:"posted_at"`
}

// DemoPlace is one place a demo item is posted to: a group, by its
// author, or (GroupID empty) the author's followers' feed.
type DemoPlace struct {
	GroupID  string
	AuthorID string
}

// Demo publishes random item.reported events at a steady rate, so the
// dashboard has something to show at once (switchboard --demo), and, with
// WithPosts, as many item.posted events.
type Demo struct {
	pub   Publisher
	topic string
	rate  float64
	log   *slog.Logger

	postsTopic string
	places     func(itemID string) []DemoPlace
}

// NewDemo returns a Demo that publishes to topic through p at perSecond
// reports per second; a rate of zero or less takes DefaultDemoRate.
func NewDemo(p Publisher, topic string, perSecond float64, log *slog.Logger) *Demo {
	if perSecond <= 0 {
		perSecond = DefaultDemoRate
	}
	if log == nil {
		log = slog.Default()
	}
	return &Demo{pub: p, topic: topic, rate: perSecond, log: log}
}

// WithPosts makes d also post, after each report, a random demo item to
// topic: one item.posted per place places returns for it (none when it
// returns none). It returns d.
func (d *Demo) WithPosts(topic string, places func(itemID string) []DemoPlace) *Demo {
	d.postsTopic, d.places = topic, places
	return d
}

// Run publishes reports until ctx is done, then returns nil. A report that
// fails to publish is logged and skipped: the demo must not stop the hub.
func (d *Demo) Run(ctx context.Context) error {
	if d.pub == nil || d.topic == "" {
		return errors.New("producers: demo needs a publisher and a topic")
	}
	lim := rate.NewLimiter(rate.Limit(d.rate), 1)
	d.log.Info("demo report generator started", "topic", d.topic, "rate", d.rate)
	defer d.log.Info("demo report generator stopped")
	for {
		if err := lim.Wait(ctx); err != nil {
			// Wait fails early when ctx ends before the next token is due:
			// nothing more would be published, so just wait for the end.
			<-ctx.Done()
			return nil
		}
		ev := d.report()
		if err := d.pub.Publish(ctx, d.topic, ev.Subject, ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Warn("demo report not published", "err", err)
		}
		if d.places == nil || d.postsTopic == "" {
			continue
		}
		for _, ev := range d.posts() {
			if err := d.pub.Publish(ctx, d.postsTopic, ev.Subject, ev); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				d.log.Warn("demo post not published", "err", err)
			}
		}
	}
}

// demoTitles are what demo items are.
var demoTitles = []string{"Bike", "Sofa", "Guitar", "Lamp", "Camera", "Desk", "Kettle", "Jacket", "Pram", "Tent"}

// posts makes the item.posted events of one random demo item: one per
// place it is in.
func (d *Demo) posts() []CloudEvent {
	n := 1 + rand.IntN(DemoItems)
	item := fmt.Sprintf("item-%d", n)
	now := time.Now().UTC().Format(time.RFC3339)
	title := fmt.Sprintf("%s #%d", demoTitles[n%len(demoTitles)], n)
	var out []CloudEvent
	for _, pl := range d.places(item) {
		out = append(out, NewEvent(DemoSource, TypeItemPosted, item, "", ItemPosted{
			ItemID: item, GroupID: pl.GroupID, AuthorID: pl.AuthorID, Title: title, PostedAt: now,
		}))
	}
	return out
}

// report makes one random item.reported event.
func (d *Demo) report() CloudEvent {
	item := fmt.Sprintf("item-%d", 1+rand.IntN(DemoItems))
	now := time.Now().UTC().Format(time.RFC3339)
	return NewEvent(DemoSource, TypeItemReported, item, "", ItemReported{
		ItemID:     item,
		ReporterID: fmt.Sprintf("user-%d", 1+rand.IntN(5000)),
		Reason:     demoReasons[rand.IntN(len(demoReasons))],
		ReportedAt: now,
	})
}
