package consumers

import (
	"bytes"
	"encoding/json"
	"iter"

	"github.com/switchboard/switchboard/hub/jsonscan"
)

// members yields the members of obj, a JSON object that is valid and
// compact (no whitespace outside strings), as unescaped key and raw value.
// It reads only the top level, so decoding an event does not build a map of
// it. The key is only valid during the yield.
func members(obj []byte) iter.Seq2[[]byte, []byte] {
	return func(yield func([]byte, []byte) bool) {
		if len(obj) < 2 || obj[0] != '{' {
			return
		}
		i := 1
		for i < len(obj) && obj[i] != '}' {
			kEnd := jsonscan.SkipString(obj, i)
			key := obj[i+1 : kEnd-1]
			if bytes.IndexByte(key, '\\') >= 0 {
				key = []byte(unquote(obj[i:kEnd]))
			}
			vStart := kEnd + 1 // past ':'
			vEnd := jsonscan.SkipValue(obj, vStart)
			if !yield(key, obj[vStart:vEnd]) {
				return
			}
			i = vEnd
			if i < len(obj) && obj[i] == ',' {
				i++
			}
		}
	}
}

// unquote returns the text of a JSON string; "" for anything else.
func unquote(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
