package consumers

import (
	"bytes"
	"encoding/json"
	"iter"
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
			kEnd := skipString(obj, i)
			key := obj[i+1 : kEnd-1]
			if bytes.IndexByte(key, '\\') >= 0 {
				key = []byte(unquote(obj[i:kEnd]))
			}
			vStart := kEnd + 1 // past ':'
			vEnd := skipValue(obj, vStart)
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

// skipString returns the index just past the string that starts at b[i].
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		return j
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
