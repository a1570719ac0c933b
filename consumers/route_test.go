package consumers

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/hub"
)

func TestRouterChannels(t *testing.T) {
	routes := append(DefaultRoutes("items.reported", "takedown.commands", "takedown.events"),
		Route{Topic: "typed", Channels: []string{"type:{type}", "{type}", "t.{type}:{subject}-{correlationid}", "type:{type}"}})
	r, err := NewRouter(routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Topics(), []string{"items.reported", "takedown.commands", "takedown.events", "typed"}; !slices.Equal(got, want) {
		t.Errorf("Topics = %v, want %v", got, want)
	}
	tests := []struct {
		name  string
		topic string
		ev    hub.Event
		want  []string
	}{
		{"report with subject", "items.reported", hub.Event{Type: "item.reported", Subject: "item-1"}, []string{"reports", "item:item-1"}},
		{"report with subject and correlation", "items.reported", hub.Event{Subject: "item-1", CorrelationID: "c-1"}, []string{"reports", "item:item-1", "corr:c-1"}},
		{"command", "takedown.commands", hub.Event{Subject: "item-2", CorrelationID: "c-2"}, []string{"takedowns", "item:item-2", "corr:c-2"}},
		{"event without subject", "takedown.events", hub.Event{CorrelationID: "c-3"}, []string{"takedowns", "corr:c-3"}},
		{"subject that is no valid key is skipped", "takedown.events", hub.Event{Subject: "item 4/x", CorrelationID: "c-4"}, []string{"takedowns", "corr:c-4"}},
		{"over-long correlation is skipped", "takedown.events", hub.Event{CorrelationID: strings.Repeat("c", 129)}, []string{"takedowns"}},
		{"unknown topic", "other", hub.Event{Subject: "item-1"}, []string{}},
		{"type placeholder and duplicates", "typed", hub.Event{Type: "item.removed", Subject: "i", CorrelationID: "c"}, []string{"type:item.removed", "item.removed", "t.item.removed:i-c"}},
		{"type in namespace must fit the namespace grammar", "typed", hub.Event{Type: "Item.Removed"}, []string{"type:Item.Removed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Channels(tt.topic, &tt.ev)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Channels = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewRouterErrors(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"no routes", nil, "no routes"},
		{"no topic", []Route{{Channels: []string{"a"}}}, "no topic"},
		{"topic twice", []Route{{Topic: "a", Channels: []string{"a"}}, {Topic: "a", Channels: []string{"b"}}}, `topic "a" is routed twice`},
		{"no channels", []Route{{Topic: "a"}}, `topic "a" has no channels`},
		{"unknown placeholder", []Route{{Topic: "a", Channels: []string{"item:{item}"}}}, `"item:{item}": unknown placeholder {item}`},
		{"unmatched open brace", []Route{{Topic: "a", Channels: []string{"item:{subject"}}}, `"item:{subject": unmatched '{'`},
		{"unmatched close brace", []Route{{Topic: "a", Channels: []string{"item:subject}"}}}, `"item:subject}": unmatched '}'`},
		{"bad namespace", []Route{{Topic: "a", Channels: []string{"Reports"}}}, `channel template "Reports"`},
		{"empty template", []Route{{Topic: "a", Channels: []string{""}}}, `channel template ""`},
		{"bad key", []Route{{Topic: "a", Channels: []string{"item:{subject}/x"}}}, `channel template "item:{subject}/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRouter(tt.routes, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrBadRoute) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want ErrBadRoute and %q", err, tt.want)
			}
		})
	}
}

func BenchmarkRouterChannels(b *testing.B) {
	r, err := NewRouter(DefaultRoutes("items.reported", "takedown.commands", "takedown.events"), nil)
	if err != nil {
		b.Fatal(err)
	}
	ev := &hub.Event{Type: "item.removed", Subject: "item-42", CorrelationID: "0b6a2c1e-5d1f-4bd5-9d7c-2f1c7d7c8e11"}
	b.ReportAllocs()
	for b.Loop() {
		if len(r.Channels("takedown.events", ev)) != 3 {
			b.Fatal("want 3 channels")
		}
	}
}

// structured decodes a structured-mode event with data, as the consumer
// would, so Event.JSON is what Channels reads.
func structured(t testing.TB, typ, subject, data string) *hub.Event {
	t.Helper()
	v := `{"specversion":"1.0","id":"e1","source":"/src/a","type":"` + typ + `"`
	if subject != "" {
		v += `,"subject":"` + subject + `"`
	}
	if data != "" {
		v += `,"data":` + data
	}
	v += "}"
	ev, err := Decode(kafka.Message{Value: []byte(v), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestRouterDataAndTypes(t *testing.T) {
	r, err := NewRouter([]Route{
		{Topic: "posts", Types: []string{"item.posted", "item.updated"},
			Channels: []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}", "src.{data.kind}:{data.group_id}"}},
		{Topic: "sources", Channels: []string{"from:{source}", "all"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		topic     string
		typ, subj string
		data      string
		want      []string
		stats     RouteStats // the change in the topic's counts
	}{
		{"every member", "posts", "item.posted", "item-7", `{"group_id":"group-3","author_id":"user-42","kind":"a"}`,
			[]string{"group:group-3", "feed:user-42", "item:item-7", "src.a:group-3"}, RouteStats{}},
		{"integer members", "posts", "item.updated", "item-7", `{"group_id":3,"author_id":-42,"kind":"a"}`,
			[]string{"group:3", "feed:-42", "item:item-7", "src.a:3"}, RouteStats{}},
		{"missing member", "posts", "item.posted", "item-7", `{"author_id":"user-42"}`,
			[]string{"feed:user-42", "item:item-7"}, RouteStats{Missing: 2}},
		{"empty, null, fraction, bool, object and list are missing", "posts", "item.posted", "", `{"group_id":"","author_id":null,"kind":1.5,"x":[1]}`,
			[]string{}, RouteStats{Missing: 4}},
		{"object and list members", "posts", "item.posted", "i", `{"group_id":{"id":"g"},"author_id":[1],"kind":true}`,
			[]string{"item:i"}, RouteStats{Missing: 3}},
		{"escaped string", "posts", "item.posted", "i", `{"group_id":"g\u002d1","author_id":"a"}`,
			[]string{"group:g-1", "feed:a", "item:i"}, RouteStats{Missing: 1}},
		{"invalid channel", "posts", "item.posted", "i", `{"group_id":"group 3","author_id":"a","kind":"K"}`,
			[]string{"feed:a", "item:i"}, RouteStats{Invalid: 2}},
		{"nested member is not reached", "posts", "item.posted", "i", `{"meta":{"group_id":"g"},"author_id":"a"}`,
			[]string{"feed:a", "item:i"}, RouteStats{Missing: 2}},
		{"data is not an object", "posts", "item.posted", "i", `"group_id"`,
			[]string{"item:i"}, RouteStats{Missing: 3}},
		{"no data", "posts", "item.posted", "i", "",
			[]string{"item:i"}, RouteStats{Missing: 3}},
		{"last member wins", "posts", "item.posted", "i", `{"group_id":"g1","group_id":"g2","author_id":"a"}`,
			[]string{"group:g2", "feed:a", "item:i"}, RouteStats{Missing: 1}},
		{"type not routed", "posts", "item.deleted", "i", `{"group_id":"g","author_id":"a"}`,
			nil, RouteStats{Filtered: 1}},
		{"source", "sources", "any.type", "", "", []string{"all"}, RouteStats{Invalid: 1}}, // "/src/a" has slashes
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.Stats()[tt.topic]
			got := r.Channels(tt.topic, structured(t, tt.typ, tt.subj, tt.data))
			if !slices.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("Channels = %q, want %q", got, tt.want)
			}
			after := r.Stats()[tt.topic]
			diff := RouteStats{Filtered: after.Filtered - before.Filtered, Missing: after.Missing - before.Missing, Invalid: after.Invalid - before.Invalid}
			if diff != tt.stats {
				t.Errorf("counted %+v, want %+v", diff, tt.stats)
			}
		})
	}
	if got := r.Channels("sources", &hub.Event{Source: "crm.eu-1", Type: "t"}); !slices.Equal(got, []string{"from:crm.eu-1", "all"}) {
		t.Errorf("{source}: Channels = %q", got)
	}
}

func TestCheckTemplate(t *testing.T) {
	for _, ok := range []string{"reports", "item:{subject}", "g:{data.group_id}", "{type}", "s:{source}", "a.{data.k-1}:{data.K_2}"} {
		if err := CheckTemplate(ok); err != nil {
			t.Errorf("CheckTemplate(%q): %v", ok, err)
		}
	}
	for tmpl, want := range map[string]string{
		"g:{data.}":        "a data field is 1 to 64",
		"g:{data.a.b}":     "a data field is 1 to 64",
		"g:{data.a b}":     "a data field is 1 to 64",
		"g:{datum.a}":      "unknown placeholder {datum.a}",
		"g:{Subject}":      "unknown placeholder {Subject}",
		"g:{data.group_id": "unmatched '{'",
		"G:{data.x}":       "bad channel name",
	} {
		if err := CheckTemplate(tmpl); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTemplate(%q) = %v, want %q", tmpl, err, want)
		}
	}
	if _, err := NewRouter([]Route{{Topic: "a", Types: []string{""}, Channels: []string{"x"}}}, nil); !errors.Is(err, ErrBadRoute) {
		t.Errorf("an empty type: %v, want ErrBadRoute", err)
	}
}

// BenchmarkRouterChannelsData routes an item.posted by two data members
// and its subject: the data is scanned once per event.
func BenchmarkRouterChannelsData(b *testing.B) {
	r, err := NewRouter([]Route{{Topic: "items.posted", Types: []string{"item.posted", "item.updated"},
		Channels: []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ev := structured(b, "item.posted", "item-42",
		`{"item_id":"item-42","title":"Bike #42, barely used, with a bell and two locks","group_id":"group-7","author_id":"user-1234","posted_at":"2026-12-01T10:00:00Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		if len(r.Channels("items.posted", ev)) != 3 {
			b.Fatal("want 3 channels")
		}
	}
}

// FuzzRouterData routes decoded structured-mode events by data members:
// no input makes Channels panic or return an invalid channel, and every
// channel of a data template holds the member's text.
func FuzzRouterData(f *testing.F) {
	for _, d := range []string{
		`{"group_id":"group-3","author_id":"user-42"}`,
		`{"group_id":3,"author_id":-42,"group_id":"g2"}`,
		`{"group_id":"g\u002d1","author_id":null}`,
		`{"group_id":{"group_id":"x"},"author_id":["a"]}`,
		`{"group_id":"a b","author_id":1.5e3}`,
		`{"s":"}{\"group_id\":1","group_id":"\u00e9"}`,
		`"group_id"`, `[{"group_id":"g"}]`, `null`, `{}`,
	} {
		f.Add(d)
	}
	r, err := NewRouter([]Route{{Topic: "t", Channels: []string{"group:{data.group_id}", "feed.{data.author_id}:{data.group_id}", "all"}}}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data string) {
		v := `{"specversion":"1.0","id":"e1","source":"/s","type":"t","data":` + data + `}`
		ev, err := Decode(kafka.Message{Value: []byte(v), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}})
		if err != nil {
			return
		}
		chs := r.Channels("t", ev)
		if !slices.Contains(chs, "all") {
			t.Errorf("Channels = %q: the literal template is missing", chs)
		}
		for _, ch := range chs {
			if err := hub.ValidateChannel(ch); err != nil {
				t.Errorf("Channels returned %q: %v", ch, err)
			}
		}
	})
}
