package consumers

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/switchboard/switchboard/hub"
)

// Placeholders a channel template may hold (SPEC §2.1).
const (
	PlaceholderSubject       = "{subject}"
	PlaceholderCorrelationID = "{correlationid}"
	PlaceholderType          = "{type}"
	PlaceholderSource        = "{source}"
	// PlaceholderData starts {data.<field>}: the top-level member <field>
	// of the event's JSON data, when it is a string or an integer.
	PlaceholderData = "{data."
)

// maxDataField bounds the name of a {data.<field>} placeholder.
const maxDataField = 64

// Route names the channels that carry the events of one Kafka topic.
// Channels are templates: {subject}, {correlationid}, {type}, {source} and
// {data.<field>} stand for the event's values.
type Route struct {
	// Topic is the Kafka topic the route applies to.
	Topic string
	// Types, when not empty, are the only event types routed; the others
	// are committed and reach no channel.
	Types []string
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

// RouteStats counts, for one routed topic, what routing left out.
type RouteStats struct {
	// Filtered is the number of events whose type is not in the route's
	// Types: committed, carried by no channel.
	Filtered uint64
	// Missing is the number of channel templates that yielded no channel
	// because a placeholder's value was missing or empty (an event without
	// a correlation ID, JSON data without the member).
	Missing uint64
	// Invalid is the number of channel templates that yielded no channel
	// because the result was not a valid channel name.
	Invalid uint64
}

// Router expands a topic's channel templates for an event. Its routes
// do not change after NewRouter and its counters are atomic, so it is safe
// for concurrent use.
type Router struct {
	byTopic map[string]*topicRoute
	topics  []string
	log     *slog.Logger
}

// topicRoute is one compiled Route and its counters.
type topicRoute struct {
	types     []string
	templates []template
	// fields are the distinct {data.<field>} names of the templates; a
	// part's data is its index here plus one.
	fields                     []string
	filtered, missing, invalid atomic.Uint64
}

// template is a parsed channel template: literal text and placeholders.
type template struct {
	src   string
	parts []part
}

// part is literal text, an attribute placeholder when attr is set, or a
// data placeholder when data > 0.
type part struct {
	lit  string
	attr func(*hub.Event) string
	data int
}

var attrPlaceholders = map[string]func(*hub.Event) string{
	PlaceholderSubject:       func(e *hub.Event) string { return e.Subject },
	PlaceholderCorrelationID: func(e *hub.Event) string { return e.CorrelationID },
	PlaceholderType:          func(e *hub.Event) string { return e.Type },
	PlaceholderSource:        func(e *hub.Event) string { return e.Source },
}

// NewRouter checks and compiles routes. Every topic must be named once and
// have at least one channel, every type must be non-empty, and every
// template must be a valid channel name once each placeholder is replaced
// by "x". Errors wrap ErrBadRoute and name the bad topic or template.
func NewRouter(routes []Route, log *slog.Logger) (*Router, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("%w: no routes", ErrBadRoute)
	}
	r := &Router{byTopic: make(map[string]*topicRoute, len(routes)), log: log}
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
		if slices.Contains(rt.Types, "") {
			return nil, fmt.Errorf("%w: topic %q: an empty type", ErrBadRoute, rt.Topic)
		}
		tr := &topicRoute{types: slices.Clone(rt.Types), templates: make([]template, 0, len(rt.Channels))}
		for _, src := range rt.Channels {
			t, err := parseTemplate(src, &tr.fields)
			if err != nil {
				return nil, fmt.Errorf("%w: topic %q: %w", ErrBadRoute, rt.Topic, err)
			}
			tr.templates = append(tr.templates, t)
		}
		r.byTopic[rt.Topic] = tr
		r.topics = append(r.topics, rt.Topic)
	}
	return r, nil
}

// CheckTemplate reports whether src is a valid channel template: known
// placeholders, and a valid channel name once each is replaced by "x".
func CheckTemplate(src string) error {
	var fields []string
	_, err := parseTemplate(src, &fields)
	return err
}

// parseTemplate splits src into literals and placeholders and checks it.
// It adds the data fields src names to *fields.
func parseTemplate(src string, fields *[]string) (template, error) {
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
		if attr, ok := attrPlaceholders[name]; ok {
			t.parts = append(t.parts, part{attr: attr})
		} else if field, ok := strings.CutPrefix(name[:len(name)-1], PlaceholderData); ok {
			if !validDataField(field) {
				return template{}, fmt.Errorf("channel template %q: %s: a data field is 1 to %d of [A-Za-z0-9_-]", src, name, maxDataField)
			}
			k := slices.Index(*fields, field)
			if k < 0 {
				*fields = append(*fields, field)
				k = len(*fields) - 1
			}
			t.parts = append(t.parts, part{data: k + 1})
		} else {
			return template{}, fmt.Errorf("channel template %q: unknown placeholder %s (known: %s, %s, %s, %s, {data.<field>})",
				src, name, PlaceholderSubject, PlaceholderCorrelationID, PlaceholderType, PlaceholderSource)
		}
		sample.WriteString("x")
		rest = rest[i+j+1:]
	}
	if err := hub.ValidateChannel(sample.String()); err != nil {
		return template{}, fmt.Errorf("channel template %q: %w", src, err)
	}
	return t, nil
}

func validDataField(f string) bool {
	if f == "" || len(f) > maxDataField {
		return false
	}
	for i := 0; i < len(f); i++ {
		if c := f[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Topics returns the routed topics, in the order of the routes.
func (r *Router) Topics() []string { return slices.Clone(r.topics) }

// Stats returns the counts of each routed topic.
func (r *Router) Stats() map[string]RouteStats {
	out := make(map[string]RouteStats, len(r.byTopic))
	for t, tr := range r.byTopic {
		out[t] = RouteStats{Filtered: tr.filtered.Load(), Missing: tr.missing.Load(), Invalid: tr.invalid.Load()}
	}
	return out
}

// maxInlineFields is how many data fields Channels looks up without an
// allocation.
const maxInlineFields = 8

// Channels returns the channels that carry ev, read from topic: each
// template of the topic's route with the event's values filled in. None
// when the route has Types and ev's type is not one of them. A template is
// skipped when a placeholder's value is missing or empty, or when the
// result is not a valid channel name (a subject with a space, say); each
// skip is counted (see Stats). Duplicates are removed; the order is the
// route's. The event's data is read once, and only when a template of the
// route needs it.
func (r *Router) Channels(topic string, ev *hub.Event) []string {
	tr := r.byTopic[topic]
	if tr == nil {
		return []string{}
	}
	if len(tr.types) > 0 && !slices.Contains(tr.types, ev.Type) {
		tr.filtered.Add(1)
		return nil
	}
	out := make([]string, 0, len(tr.templates))
	var (
		inline [maxInlineFields][]byte
		vals   [][]byte // the data fields' values; nil until needed
		read   bool
		b      strings.Builder
	)
	// The channels share one allocation: a Builder never changes what it
	// has written, so the names cut from it stay as they are. A template
	// that is one literal (checked when it was parsed) is its own name.
	b.Grow(64 + len(ev.Subject) + len(ev.CorrelationID))
next:
	for _, t := range tr.templates {
		if len(t.parts) == 1 && t.parts[0].attr == nil && t.parts[0].data == 0 {
			if !slices.Contains(out, t.parts[0].lit) {
				out = append(out, t.parts[0].lit)
			}
			continue
		}
		start := b.Len()
		for _, p := range t.parts {
			switch {
			case p.attr != nil:
				v := p.attr(ev)
				if v == "" {
					tr.missing.Add(1)
					continue next
				}
				b.WriteString(v)
			case p.data > 0:
				if !read {
					read = true
					vals = inline[:0]
					if len(tr.fields) > maxInlineFields {
						vals = make([][]byte, 0, len(tr.fields))
					}
					vals = dataFields(ev.JSON, tr.fields, vals[:len(tr.fields)])
				}
				v := vals[p.data-1]
				if len(v) == 0 {
					tr.missing.Add(1)
					continue next
				}
				b.Write(v)
			default:
				b.WriteString(p.lit)
			}
		}
		ch := b.String()[start:]
		if err := hub.ValidateChannel(ch); err != nil {
			tr.invalid.Add(1)
			r.log.Debug("channel skipped", "template", t.src, "event_id", ev.ID, "err", err)
			continue
		}
		if !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	return out
}

// dataFields sets vals[i] to the text of the member fields[i] of the data
// of event, a compact structured CloudEvent, when that member is a string
// or an integer; else leaves it empty. Only the top level of the event and
// of its data is scanned, once; when a name repeats the last one counts,
// as in Decode.
func dataFields(event []byte, fields []string, vals [][]byte) [][]byte {
	var data []byte
	for k, v := range members(event) {
		if string(k) == memberData {
			data = v
		}
	}
	if len(data) == 0 || data[0] != '{' {
		return vals
	}
	for k, v := range members(data) {
		i := -1
		for j, f := range fields {
			if string(k) == f {
				i = j
				break
			}
		}
		if i < 0 {
			continue
		}
		switch {
		case v[0] == '"':
			if inner := v[1 : len(v)-1]; bytes.IndexByte(inner, '\\') < 0 {
				vals[i] = inner
			} else {
				vals[i] = []byte(unquote(v))
			}
		case isInteger(v):
			vals[i] = v
		default:
			vals[i] = nil
		}
	}
	return vals
}

// isInteger reports whether v, a JSON number or literal, is an integer.
func isInteger(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
