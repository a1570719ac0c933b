package takedown

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/jsonscan"
)

// outcomeScan reads a takedown event's data without encoding/json's
// reflection: every outcome the Recorder stores is parsed once per
// record's change, and json.Unmarshal of the whole event into a struct
// cost about ten allocations of it. It returns ok only when the event is
// valid JSON that json.Unmarshal would read into the same Outcome without
// an error: an object whose data (named "data" once, no other key equal to
// it under case folding) is absent, null, or an object whose known
// members are each named once, exactly, with a string (no escapes, valid
// UTF-8) or null, and removed_from an array of such strings or null.
// Anything else is left to encoding/json (ok false).
//
// The strings of the outcome share one copy of the data object's text.
func outcomeScan(ev *hub.Event) (o Outcome, ok bool) {
	b := ev.JSON
	if !json.Valid(b) { // json.Valid keeps its scanner in a pool
		return Outcome{}, false
	}
	o = Outcome{Type: ev.Type, Subject: ev.Subject}
	data, ok := topMember(b, "data")
	if !ok {
		return Outcome{}, false
	}
	if data == nil || string(data) == "null" {
		return o, true
	}
	if data[0] != '{' {
		return Outcome{}, false
	}
	var text string // data's text, copied once when a string is kept
	str := func(raw []byte, start int) string {
		if len(raw) == 0 {
			return ""
		}
		if text == "" {
			text = string(data)
		}
		return text[start : start+len(raw)]
	}
	var seen [5]bool
	ok = eachMember(data, func(key []byte, vStart, vEnd int) bool {
		v := data[vStart:vEnd]
		f := -1
		for i, name := range outcomeFields {
			if string(key) == name {
				f = i
			} else if asciiEqualFold(key, name) {
				return false // encoding/json folds case: leave it to it
			}
		}
		if f < 0 {
			return true // not a member of Outcome
		}
		if seen[f] {
			return false
		}
		seen[f] = true
		if string(v) == "null" {
			return true // json.Unmarshal leaves the zero value
		}
		if f == fieldRemovedFrom {
			list, ok := stringArray(v, vStart, str)
			o.RemovedFrom = list
			return ok
		}
		s, ok := plainString(v)
		if !ok {
			return false
		}
		val := str(s, vStart+1)
		switch f {
		case fieldItemID:
			o.ItemID = val
		case fieldContainerID:
			o.ContainerID = val
		case fieldConfirmedAt:
			o.ConfirmedAt = val
		case fieldReason:
			o.Reason = val
		}
		return true
	})
	if !ok {
		return Outcome{}, false
	}
	return o, true
}

// The members of a takedown event's data that an Outcome keeps, as
// parseOutcomeJSON names them.
var outcomeFields = [5]string{"item_id", "container_id", "removed_from", "confirmed_at", "reason"}

const (
	fieldItemID = iota
	fieldContainerID
	fieldRemovedFrom
	fieldConfirmedAt
	fieldReason
)

// topMember returns the value of obj's member name (nil when absent). ok
// is false when obj is not an object, or when a key is escaped, not ASCII,
// equal to name under case folding but not name, or name twice: then
// encoding/json's matching decides. obj is valid JSON.
func topMember(obj []byte, name string) (v []byte, ok bool) {
	i := jsonscan.SkipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, false
	}
	ok = eachMember(obj[i:], func(key []byte, vStart, vEnd int) bool {
		switch {
		case string(key) == name:
			if v != nil {
				return false
			}
			v = obj[i+vStart : i+vEnd]
		case asciiEqualFold(key, name):
			return false
		}
		return true
	})
	return v, ok
}

// eachMember calls fn with each member of obj, a valid JSON object: its
// key's text and where its value starts and ends in obj. It stops, false,
// when fn returns false or a key is escaped or not ASCII.
func eachMember(obj []byte, fn func(key []byte, vStart, vEnd int) bool) bool {
	i := jsonscan.SkipSpace(obj, 1)
	for i < len(obj) && obj[i] == '"' {
		kEnd := jsonscan.SkipString(obj, i)
		key := obj[i+1 : kEnd-1]
		if !plainASCII(key) {
			return false
		}
		i = jsonscan.SkipSpace(obj, kEnd)
		i = jsonscan.SkipSpace(obj, i+1) // past ':'
		vEnd := jsonscan.SkipValue(obj, i)
		if !fn(key, i, vEnd) {
			return false
		}
		i = jsonscan.SkipSpace(obj, vEnd)
		if i < len(obj) && obj[i] == ',' {
			i = jsonscan.SkipSpace(obj, i+1)
		}
	}
	return true
}

// stringArray reads v, a valid JSON array, as encoding/json reads it into
// a []string (empty, not nil, for []), when every element is a plain
// string; start is where v starts in the text str copies from.
func stringArray(v []byte, start int, str func(raw []byte, start int) string) ([]string, bool) {
	n := 0
	for i := jsonscan.SkipSpace(v, 1); i < len(v) && v[i] != ']'; {
		if v[i] != '"' {
			return nil, false
		}
		end := jsonscan.SkipString(v, i)
		if _, ok := plainString(v[i:end]); !ok {
			return nil, false
		}
		n++
		i = jsonscan.SkipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = jsonscan.SkipSpace(v, i+1)
		}
	}
	list := make([]string, 0, n)
	for i := jsonscan.SkipSpace(v, 1); i < len(v) && v[i] != ']'; {
		end := jsonscan.SkipString(v, i)
		list = append(list, str(v[i+1:end-1], start+i+1))
		i = jsonscan.SkipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = jsonscan.SkipSpace(v, i+1)
		}
	}
	return list, true
}

// plainString returns the text of v when it is a JSON string without
// escapes whose text is valid UTF-8 (encoding/json would change it
// otherwise).
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	s := v[1 : len(v)-1]
	if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, false
	}
	return s, true
}

// plainASCII reports whether a key's text is printable ASCII without
// escapes: the keys matched here byte by byte.
func plainASCII(key []byte) bool {
	for _, c := range key {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether key equals name under ASCII case folding.
func asciiEqualFold(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range len(key) {
		a, b := key[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
