package consumers

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/switchboard/switchboard/hub"
)

// Placeholders a channel template may hold.
const (
	PlaceholderSubject       = "{subject}"
	PlaceholderCorrelationID = "{correlationid}"
	PlaceholderType          = "{type}"
)

// Route names the channels that carry the events of one Kafka topic.
// Channels are templates: {subject}, {correlationid} and {type} stand for
// the event's attributes.
type Route struct {
	// Topic is the Kafka topic the route applies to.
	Topic string
	// Channels are channel templates, like "reports" or "item:{subject}".
	Channels []string
}

// DefaultRoutes is the routing of the contract: reports go to reports,
// commands and events to takedowns, and every event also to
// item:<subject> and corr:<correlationid> when it has them.
func DefaultRoutes(reportsTopic, commandsTopic, eventsTopic string) []Route {
	per := func(static string) []string {
		return []string{static, "item:" + PlaceholderSubject, "corr:" + PlaceholderCorrelationID}
	}
	return []Route{
		{Topic: reportsTopic, Channels: per("reports")},
		{Topic: commandsTopic, Channels: per("takedowns")},
		{Topic: eventsTopic, Channels: per("takedowns")},
	}
}

// Router expands a topic's channel templates for an event. It is
// immutable, so safe for concurrent use.
type Router struct {
	byTopic map[string][]template
	topics  []string
	log     *slog.Logger
}

// template is a parsed channel template: literal text and placeholders.
type template struct {
	src   string
	parts []part
}

// part is literal text, or a placeholder when field is set.
type part struct {
	lit   string
	field func(*hub.Event) string
}

var placeholders = map[string]func(*hub.Event) string{
	PlaceholderSubject:       func(e *hub.Event) string { return e.Subject },
	PlaceholderCorrelationID: func(e *hub.Event) string { return e.CorrelationID },
	PlaceholderType:          func(e *hub.Event) string { return e.Type },
}

// NewRouter checks and compiles routes. Every topic must be named once and
// have at least one channel, and every template must be a valid channel
// name once each placeholder is replaced by "x". Errors wrap ErrBadRoute
// and name the bad topic or template.
func NewRouter(routes []Route, log *slog.Logger) (*Router, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("%w: no routes", ErrBadRoute)
	}
	r := &Router{byTopic: make(map[string][]template, len(routes)), log: log}
	for _, rt := range routes {
		if strings.TrimSpace(rt.Topic) == "" {
			return nil, fmt.Errorf("%w: a route has no topic", ErrBadRoute)
		}
		if _, dup := r.byTopic[rt.Topic]; dup {
			return nil, fmt.Errorf("%w: topic %q is routed twice", ErrBadRoute, rt.Topic)
		}
		if len(rt.Channels) == 0 {
			return nil, fmt.Errorf("%w: topic %q has no channels", ErrBadRoute, rt.Topic)
		}
		ts := make([]template, 0, len(rt.Channels))
		for _, src := range rt.Channels {
			t, err := parseTemplate(src)
			if err != nil {
				return nil, fmt.Errorf("%w: topic %q: %w", ErrBadRoute, rt.Topic, err)
			}
			ts = append(ts, t)
		}
		r.byTopic[rt.Topic] = ts
		r.topics = append(r.topics, rt.Topic)
	}
	return r, nil
}

// parseTemplate splits src into literals and placeholders and checks it.
func parseTemplate(src string) (template, error) {
	t := template{src: src}
	var sample strings.Builder
	rest := src
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			sample.WriteString(rest)
			break
		}
		if rest[i] == '}' {
			return template{}, fmt.Errorf("channel template %q: unmatched '}'", src)
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
			sample.WriteString(rest[:i])
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return template{}, fmt.Errorf("channel template %q: unmatched '{'", src)
		}
		name := rest[i : i+j+1]
		field, ok := placeholders[name]
		if !ok {
			return template{}, fmt.Errorf("channel template %q: unknown placeholder %s (known: %s, %s, %s)",
				src, name, PlaceholderSubject, PlaceholderCorrelationID, PlaceholderType)
		}
		t.parts = append(t.parts, part{field: field})
		sample.WriteString("x")
		rest = rest[i+j+1:]
	}
	if err := hub.ValidateChannel(sample.String()); err != nil {
		return template{}, fmt.Errorf("channel template %q: %w", src, err)
	}
	return t, nil
}

// Topics returns the routed topics, in the order of the routes.
func (r *Router) Topics() []string { return slices.Clone(r.topics) }

// Channels returns the channels that carry ev, read from topic: each
// template of the topic's route with the event's values filled in. A
// template is skipped when a placeholder's value is empty, or when the
// result is not a valid channel name (a subject with a space, say).
// Duplicates are removed; the order is the route's.
func (r *Router) Channels(topic string, ev *hub.Event) []string {
	ts := r.byTopic[topic]
	out := make([]string, 0, len(ts))
	var b strings.Builder
next:
	for _, t := range ts {
		b.Reset()
		for _, p := range t.parts {
			if p.field == nil {
				b.WriteString(p.lit)
				continue
			}
			v := p.field(ev)
			if v == "" {
				continue next
			}
			b.WriteString(v)
		}
		ch := b.String()
		if err := hub.ValidateChannel(ch); err != nil {
			r.log.Debug("channel skipped", "template", t.src, "event_id", ev.ID, "err", err)
			continue
		}
		if !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	return out
}
