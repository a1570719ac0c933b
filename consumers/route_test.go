package consumers

import (
	"errors"
	"slices"
	"strings"
	"testing"

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
