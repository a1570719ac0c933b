package hub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type body struct {
		ItemID string          `json:"item_id"`
		N      int             `json:"n,omitempty"`
		Raw    json.RawMessage `json:"raw,omitempty"`
	}
	tests := []struct {
		name, in, err string // err: "" for success, else a part of the message
	}{
		{"ok", `{"item_id":"i-1","n":2,"raw":{"a":1}}`, ""},
		{"case folded name", `{"item_id":"i-1","ITEM_ID":"i-2"}`, `unknown member "ITEM_ID"`},
		{"only folded", `{"Item_Id":"i-2"}`, `unknown member "Item_Id"`},
		{"duplicate", `{"item_id":"i-1","item_id":"i-2"}`, `member "item_id" appears more than once`},
		{"unknown", `{"item_id":"i-1","extra":true}`, `unknown member "extra"`},
		{"wrong type", `{"item_id":5}`, `member "item_id" must be a string`},
		{"not an object", `[1]`, `must be a JSON object`},
		{"trailing", `{"item_id":"i"} {}`, `not valid JSON`},
		{"broken", `{"item_id":`, `not valid JSON`},
		{"long name clipped", `{"` + strings.Repeat("x", 500) + `":1}`, `…"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b body
			err := DecodeStrict([]byte(tt.in), &b)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrBadJSON)):
				t.Fatalf("got %v, want an ErrBadJSON with %q", err, tt.err)
			case tt.err == "" && (b.ItemID != "i-1" || b.N != 2 || string(b.Raw) != `{"a":1}`):
				t.Fatalf("decoded %+v", b)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Fatalf("error %d bytes long", len(err.Error()))
			}
		})
	}
}

func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{`{"item_id":"x"}`, `{"item_id":"x","item_id":"y"}`, `{"ITEM_ID":1}`, `[]`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b struct {
			ItemID string `json:"item_id"`
		}
		if err := DecodeStrict([]byte(s), &b); err != nil && !errors.Is(err, ErrBadJSON) {
			t.Fatalf("error not wrapping ErrBadJSON: %v", err)
		}
	})
}
