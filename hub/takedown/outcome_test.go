package takedown

import (
	"reflect"
	"testing"

	"github.com/switchboard/switchboard/hub"
)

// outcomeEvents are takedown events as the item service writes them, and
// ones it does not: escapes, members missing, named twice or in another
// case, wrong types, invalid JSON.
var outcomeEvents = []string{
	`{"specversion":"1.0","id":"e1","source":"/itemsvc","type":"takedown.confirmed","data":{"item_id":"item-1","removed_from":["group-1","group-2"],"confirmed_at":"2026-11-22T00:00:00Z"}}`,
	`{"specversion":"1.0","id":"e2","type":"takedown.rejected","data":{"item_id":"item-1","reason":"not_found"}}`,
	`{"id":"e3","type":"item.removed","data":{"item_id":"item-1","container_id":"group-1"}}`,
	`{"data":{"item_id":"item-1","removed_from":[]}}`,
	`{"data":{"item_id":"item-1","removed_from":null,"reason":null}}`,
	`{"data":{"item_id":"","removed_from":["",""]}}`,
	`{"data":null}`,
	`{"data":{}}`,
	`{"id":"no data"}`,
	`{}`,
	`null`,
	`[]`,
	`"data"`,
	`{"data":"item-1"}`,
	`{"data":[{"item_id":"item-1"}]}`,
	`{"data":{"item_id":7}}`,
	`{"data":{"item_id":true}}`,
	`{"data":{"removed_from":"group-1"}}`,
	`{"data":{"removed_from":["group-1",2]}}`,
	`{"data":{"removed_from":["group-1",null]}}`,
	`{"data":{"removed_from":[["group-1"]]}}`,
	`{"data":{"item_id":"it\u0065m-1","reason":"a \"quoted\" reason\n"}}`,
	`{"data":{"item_id":"item-1","removed_from":["gr\/oup-1","<g&2>"]}}`,
	`{"data":{"\u0069tem_id":"item-1"}}`,
	`{"d\u0061ta":{"item_id":"item-1"}}`,
	`{"Data":{"item_id":"item-1"}}`,
	`{"data":{"item_id":"item-1"},"DATA":{"reason":"r"}}`,
	`{"data":{"ITEM_ID":"item-1"}}`,
	`{"data":{"Item_Id":"item-2","item_id":"item-1"}}`,
	`{"data":{"item_id":"item-1","item_id":"item-2"}}`,
	`{"data":{"removed_from":["a"],"removed_from":["b","c"]}}`,
	`{"data":{"item_id":"item-1"},"data":{"reason":"r"}}`,
	`{"data":{"reaſon":"r","item_id":"item-1"}}`,
	`{"dätä":1,"data":{"item_id":"item-1"}}`,
	`{"data":{"item_id":"ïtem-1 ✓","extra":{"nested":[1,{"a":"]}"}],"n":-1.5e3,"t":true,"f":false,"z":null}}}`,
	"{\"data\":{\"item_id\":\"item-\xff1\"}}",
	` { "data" : { "item_id" : "item-1" , "removed_from" : [ "g1" , "g2" ] , "reason" : null } , "id" : 1 } `,
	`{"data":{"item_id":"item-1"}`,
	`{"data":{"item_id":"item-1"}}x`,
	`{"data":{"item_id":"item-1",}}`,
	``,
}

// TestParseOutcomeAsJSON: ParseOutcome gives what encoding/json gives,
// outcome and error alike, for every event.
func TestParseOutcomeAsJSON(t *testing.T) {
	for _, js := range outcomeEvents {
		sameOutcome(t, js)
	}
}

// FuzzParseOutcome: ParseOutcome gives what encoding/json gives for any
// event.
func FuzzParseOutcome(f *testing.F) {
	for _, js := range outcomeEvents {
		f.Add(js)
	}
	f.Fuzz(func(t *testing.T, js string) { sameOutcome(t, js) })
}

func sameOutcome(t *testing.T, js string) {
	t.Helper()
	ev := &hub.Event{Type: TypeConfirmed, Subject: "item-1", JSON: []byte(js)}
	got, gotErr := ParseOutcome(ev)
	want, wantErr := parseOutcomeJSON(ev)
	if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\ngot  %#v, %v\nwant %#v, %v", js, got, gotErr, want, wantErr)
	}
}

// TestParseOutcomeMalformed: an event that cannot be read is
// ReasonMalformed to the store, and a wrong type among the data's members
// is not read.
func TestParseOutcomeMalformed(t *testing.T) {
	for _, js := range []string{`{"data":{"item_id":7}}`, `{"data":"x"}`, `{"data":{`, `[]`} {
		if _, err := ParseOutcome(&hub.Event{JSON: []byte(js)}); err == nil {
			t.Errorf("%s: no error", js)
		}
	}
}

// BenchmarkParseOutcome: a confirmation as the item service writes it
// (allocs/op: the data's text and removed_from).
func BenchmarkParseOutcome(b *testing.B) {
	ev := &hub.Event{Type: TypeConfirmed, JSON: []byte(outcomeEvents[0])}
	b.ReportAllocs()
	for range b.N {
		if _, err := ParseOutcome(ev); err != nil {
			b.Fatal(err)
		}
	}
}
