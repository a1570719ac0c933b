// Package consumers reads the platform's Kafka topics, decodes each record
// as a CloudEvent, routes it to hub channels and hands it to the hub. A
// record that is not a valid CloudEvent goes, unchanged, to the dead-letter
// topic. An offset is committed only after the hub accepted the record's
// event, or after its dead letter was written: delivery is at least once.
package consumers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/hub"
)

// CloudEvents attribute names the decoder treats specially.
const (
	attrSpecVersion     = "specversion"
	attrID              = "id"
	attrSource          = "source"
	attrType            = "type"
	attrSubject         = "subject"
	attrTime            = "time"
	attrDataContentType = "datacontenttype"
	attrDataSchema      = "dataschema"
	attrCorrelationID   = "correlationid"
	memberData          = "data"
	memberDataBase64    = "data_base64"

	headerContentType  = "content-type"
	headerPrefix       = "ce_"
	structuredMimeType = "application/cloudevents+json"
)

// attrOrder is the order of the known attributes in the JSON that Decode
// produces; extensions follow, sorted by name, then the data.
var attrOrder = []string{attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrDataContentType, attrDataSchema, attrCorrelationID}

// Decode turns a Kafka record into the hub's Event, following the
// CloudEvents 1.0 Kafka protocol binding in both of its modes.
//
// Structured mode, when the content-type header is
// application/cloudevents+json (any case, parameters allowed): the value is
// the whole event as a JSON object. Every member is kept.
//
// Binary mode, otherwise: each ce_<name> header is the attribute <name>
// (lowercased), the content-type header is datacontenttype, and the value is
// the data. With a JSON content type (application/json, any */*+json, or
// none at all) the value must be valid JSON and becomes "data"; an empty
// value means no data. With any other content type the value is kept as
// "data_base64".
//
// The event must have specversion "1.0" and non-empty string id, source and
// type. Event.JSON is the event in the structured JSON format on one line.
// Subject and CorrelationID come from the string attributes subject and
// correlationid; in structured mode, members that are not strings stay in
// the JSON but are not used for routing. When subject is absent, empty or
// not a string and the data is a JSON object with a string item_id, Subject
// is that item_id: the platform's events name their item there, and routing
// to item:<id> needs it. The JSON is not changed by this fallback.
//
// Errors wrap ErrInvalidEvent and say what is wrong.
func Decode(m kafka.Message) (*hub.Event, error) {
	ct, err := contentType(m.Headers)
	if err != nil {
		return nil, err
	}
	var ev *hub.Event
	if ct != "" && mediaType(ct) == structuredMimeType {
		ev, err = decodeStructured(m.Value)
	} else {
		ev, err = decodeBinary(m.Headers, ct, m.Value)
	}
	if err != nil {
		return nil, err
	}
	ev.Topic = m.Topic
	return ev, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// contentType returns the value of the content-type header ("" if absent).
// Header names are matched without regard to case.
func contentType(hs []kafka.Header) (string, error) {
	var ct string
	found := false
	for _, h := range hs {
		if !strings.EqualFold(h.Key, headerContentType) {
			continue
		}
		if found {
			return "", invalid("more than one content-type header")
		}
		if !utf8.Valid(h.Value) {
			return "", invalid("header %q is not valid UTF-8", h.Key)
		}
		ct, found = strings.TrimSpace(string(h.Value)), true
	}
	return ct, nil
}

// mediaType is the lowercased type/subtype of a content type, without
// parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// isJSONType reports whether data of content type ct is JSON; no content
// type means JSON, as the CloudEvents JSON format assumes.
func isJSONType(ct string) bool {
	if ct == "" {
		return true
	}
	mt := mediaType(ct)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// decodeStructured decodes a structured-mode value.
func decodeStructured(v []byte) (*hub.Event, error) {
	if len(bytes.TrimSpace(v)) == 0 {
		return nil, invalid("structured mode: the value is empty")
	}
	if !utf8.Valid(v) {
		return nil, invalid("value is not valid UTF-8")
	}
	var buf bytes.Buffer
	buf.Grow(len(v))
	if err := json.Compact(&buf, v); err != nil {
		return nil, invalid("value is not valid JSON: %v", err)
	}
	out := buf.Bytes()
	if out[0] != '{' {
		return nil, invalid("structured mode: the value is not a JSON object")
	}
	// The members the hub needs; when a name repeats, the last one counts,
	// as in JavaScript's JSON.parse.
	var specVersion, id, source, typ, subject, corrID, data, dataBase64 []byte
	for k, v := range members(out) {
		switch string(k) {
		case attrSpecVersion:
			specVersion = v
		case attrID:
			id = v
		case attrSource:
			source = v
		case attrType:
			typ = v
		case attrSubject:
			subject = v
		case attrCorrelationID:
			corrID = v
		case memberData:
			data = v
		case memberDataBase64:
			dataBase64 = v
		}
	}
	ev := &hub.Event{JSON: out}
	for _, f := range []struct {
		name string
		raw  []byte
		dst  *string
	}{{attrSpecVersion, specVersion, nil}, {attrID, id, &ev.ID}, {attrSource, source, &ev.Source}, {attrType, typ, &ev.Type}} {
		if f.raw == nil {
			return nil, invalid("missing %q", f.name)
		}
		if f.raw[0] != '"' {
			return nil, invalid("%q is not a string", f.name)
		}
		if err := checkRequired(f.name, unquote(f.raw), f.dst); err != nil {
			return nil, err
		}
	}
	if data != nil && dataBase64 != nil {
		return nil, invalid(`both "data" and "data_base64"`)
	}
	ev.Subject = unquote(subject)
	ev.CorrelationID = unquote(corrID)
	if ev.Subject == "" {
		ev.Subject = itemID(data)
	}
	return ev, nil
}

// checkRequired validates one required attribute value.
func checkRequired(name, s string, dst *string) error {
	if name == attrSpecVersion {
		if s != "1.0" {
			return invalid("specversion %q is not 1.0", clip(s))
		}
		return nil
	}
	if s == "" {
		return invalid("%q is empty", name)
	}
	if dst != nil {
		*dst = s
	}
	return nil
}

// itemID returns the string member item_id of data, a valid compact JSON
// value, if it is an object; else "".
func itemID(data []byte) string {
	var id string
	for k, v := range members(data) {
		if string(k) == "item_id" {
			id = unquote(v)
		}
	}
	return id
}

// attr is one binary-mode attribute.
type attr struct{ name, value string }

// decodeBinary decodes a binary-mode record whose content-type header is ct.
func decodeBinary(hs []kafka.Header, ct string, v []byte) (*hub.Event, error) {
	attrs := make([]attr, 0, len(hs))
	for _, h := range hs {
		if len(h.Key) < len(headerPrefix) || !strings.EqualFold(h.Key[:len(headerPrefix)], headerPrefix) {
			continue
		}
		name := strings.ToLower(h.Key[len(headerPrefix):])
		if err := checkAttrName(h.Key, name); err != nil {
			return nil, err
		}
		if !utf8.Valid(h.Value) {
			return nil, invalid("header %q is not valid UTF-8", h.Key)
		}
		if slices.ContainsFunc(attrs, func(a attr) bool { return a.name == name }) {
			return nil, invalid("more than one header for attribute %q", name)
		}
		attrs = append(attrs, attr{name, string(h.Value)})
	}
	// The content-type header is the datacontenttype; it wins over a
	// ce_datacontenttype header.
	if ct != "" {
		attrs = slices.DeleteFunc(attrs, func(a attr) bool { return a.name == attrDataContentType })
		attrs = append(attrs, attr{attrDataContentType, ct})
	} else if i := slices.IndexFunc(attrs, func(a attr) bool { return a.name == attrDataContentType }); i >= 0 {
		ct = attrs[i].value
	}

	ev := &hub.Event{}
	get := func(name string) (string, bool) {
		for _, a := range attrs {
			if a.name == name {
				return a.value, true
			}
		}
		return "", false
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{attrSpecVersion, nil}, {attrID, &ev.ID}, {attrSource, &ev.Source}, {attrType, &ev.Type}} {
		s, ok := get(f.name)
		if !ok {
			return nil, invalid("missing %q (header %s%s)", f.name, headerPrefix, f.name)
		}
		if err := checkRequired(f.name, s, f.dst); err != nil {
			return nil, err
		}
	}
	ev.Subject, _ = get(attrSubject)
	ev.CorrelationID, _ = get(attrCorrelationID)

	// The data.
	var data []byte
	dataMember := memberData
	if len(v) > 0 {
		if isJSONType(ct) {
			if !utf8.Valid(v) {
				return nil, invalid("value is not valid UTF-8")
			}
			var buf bytes.Buffer
			buf.Grow(len(v))
			if err := json.Compact(&buf, v); err != nil {
				return nil, invalid("value is not valid JSON: %v", err)
			}
			data = buf.Bytes()
			if ev.Subject == "" {
				ev.Subject = itemID(data)
			}
		} else {
			dataMember = memberDataBase64
			data = make([]byte, 0, base64.StdEncoding.EncodedLen(len(v))+2)
			data = append(data, '"')
			data = base64.StdEncoding.AppendEncode(data, v)
			data = append(data, '"')
		}
	}

	// The structured JSON: known attributes in a fixed order, extensions
	// sorted, then the data.
	slices.SortFunc(attrs, func(a, b attr) int {
		ia, ib := slices.Index(attrOrder, a.name), slices.Index(attrOrder, b.name)
		switch {
		case ia >= 0 && ib >= 0:
			return ia - ib
		case ia >= 0:
			return -1
		case ib >= 0:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	size := len(data) + len(dataMember) + 8
	for _, a := range attrs {
		size += len(a.name) + len(a.value) + 8
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, a := range attrs {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, a.name)
		out = append(out, ':')
		out = appendJSONString(out, a.value)
	}
	if data != nil {
		out = append(out, ',')
		out = appendJSONString(out, dataMember)
		out = append(out, ':')
		out = append(out, data...)
	}
	out = append(out, '}')
	ev.JSON = out
	return ev, nil
}

// checkAttrName checks a binary-mode attribute name taken from header key:
// CloudEvents allows lowercase letters and digits only, and "data" is not
// an attribute.
func checkAttrName(key, name string) error {
	if name == "" {
		return invalid("header %q names no attribute", key)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return invalid("header %q: attribute names hold only a-z and 0-9", clip(key))
		}
	}
	if name == memberData {
		return invalid("header %q: data is not an attribute", key)
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s, valid UTF-8, as a JSON string. Control
// characters, U+2028 and U+2029 are escaped, so the result has no line
// break in any reading of it.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// clip keeps error messages short when a record holds a huge value.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
