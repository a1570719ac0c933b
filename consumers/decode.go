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
	"net/netip"
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

// Content types of the CloudEvents formats Decode refuses: any
// application/cloudevents+<format> other than +json, and batch mode.
const (
	formatMimePrefix = "application/cloudevents"
	batchMimePrefix  = "application/cloudevents-batch"
)

// maxNameLen is the longest attribute name allowed: names are
// [a-z0-9]{1,20}.
const maxNameLen = 20

// nameRule ends the reason of a refused attribute name.
const nameRule = "attribute names hold only a-z and 0-9, 1 to 20 of them"

// Decode turns a Kafka record into the hub's Event, following the
// CloudEvents 1.0 Kafka protocol binding in both of its modes.
//
// Structured mode, when the content-type header is
// application/cloudevents+json (any case, parameters allowed): the value is
// the whole event as a JSON object. Every member is kept; ce_* headers are
// ignored. An attribute whose value is null is unset (CloudEvents JSON
// format §2.2); "data":null is an explicit null payload.
//
// Binary mode, when the content-type header is absent or names no
// CloudEvents format: each ce_<name> header is the attribute <name>. Header
// names are matched without regard to ASCII case and the name is
// lowercased, so ce_Subject and CE_SUBJECT both carry subject, and two
// headers that name the same attribute are refused. The content-type header
// is datacontenttype, and the value is the data. With a JSON content type
// (*/json, */*+json, or none at all) the value must be valid JSON and
// becomes "data"; an empty value means no data. With any other content type
// the value is kept as "data_base64".
//
// Any other application/cloudevents+<format> (Avro, Protobuf, ...) and
// batch mode (application/cloudevents-batch+json) are refused as formats
// that are not supported.
//
// In both modes the event is valid only if: specversion is "1.0"; id,
// source and type are non-empty strings; source is a URI-reference (RFC
// 3986); time, when set, is an RFC 3339 date-time; subject, when set, is a
// string; every attribute name is [a-z0-9]{1,20}; datacontenttype, when
// set, is a non-empty string; data_base64 is padded standard base64 (RFC
// 4648 §4); and the data agrees with datacontenttype: a JSON
// datacontenttype (or none) goes with "data", any JSON value; any other
// goes with "data_base64", or with "data" as a JSON string (text). Other
// attribute values (correlationid, extensions) may be any JSON value in
// structured mode.
//
// Event.JSON is the event in the structured JSON format on one line.
// Subject and CorrelationID come from the string attributes subject and
// correlationid; a correlationid that is not a string stays in the JSON but
// is not used for routing. When subject is unset or empty and the data is a
// JSON object with a string item_id, Subject is that item_id: the
// platform's events name their item there, and routing to item:<id> needs
// it. The JSON is not changed by this fallback.
//
// Errors wrap ErrInvalidEvent and say what is wrong, naming the attribute;
// the consumer puts that text in the dead letter's switchboard-error header.
func Decode(m kafka.Message) (*hub.Event, error) {
	ct, err := contentType(m.Headers)
	if err != nil {
		return nil, err
	}
	var ev *hub.Event
	switch mt := mediaType(ct); {
	case len(mt) == len(structuredMimeType) && hasPrefixFold(mt, structuredMimeType):
		ev, err = decodeStructured(m.Value)
	case hasPrefixFold(mt, batchMimePrefix):
		return nil, invalid("content-type %q: batch mode is not supported: send one event per record", clip(string(ct)))
	case hasPrefixFold(mt, formatMimePrefix):
		return nil, invalid("content-type %q: this event format is not supported: use binary mode or application/cloudevents+json", clip(string(ct)))
	default:
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

// contentType returns the value of the content-type header without
// surrounding spaces (empty if absent). Header names are matched without
// regard to case.
func contentType(hs []kafka.Header) ([]byte, error) {
	var ct []byte
	found := false
	for _, h := range hs {
		if !strings.EqualFold(h.Key, headerContentType) {
			continue
		}
		if found {
			return nil, invalid("more than one content-type header")
		}
		if !utf8.Valid(h.Value) {
			return nil, invalid("header %q is not valid UTF-8", clip(h.Key))
		}
		ct, found = bytes.TrimSpace(h.Value), true
	}
	return ct, nil
}

// mediaType is the type/subtype of a content type, without parameters.
func mediaType(ct []byte) []byte {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.TrimSpace(ct)
}

// hasPrefixFold reports whether s starts with prefix, lowercase ASCII, in
// any case.
func hasPrefixFold[T text](s T, prefix string) bool {
	return len(s) >= len(prefix) && hasSuffixFold(s[:len(prefix)], prefix)
}

// text is what the validators read: a header value, or the text of a JSON
// string without copying it.
type text interface{ ~string | ~[]byte }

// isJSONType reports whether data of content type ct is JSON: its media
// type, without parameters, has the subtype json or ends in +json, as the
// CloudEvents JSON format (§3.1) defines; no content type means JSON.
func isJSONType[T text](ct T) bool {
	if len(ct) == 0 {
		return true
	}
	start, end := 0, len(ct)
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' {
			end = i
			break
		}
	}
	for start < end && (ct[start] == ' ' || ct[start] == '\t') {
		start++
	}
	for end > start && (ct[end-1] == ' ' || ct[end-1] == '\t') {
		end--
	}
	const json = "json"
	if end-start < len(json) || !hasSuffixFold(ct[start:end], json) {
		return false
	}
	if end-start == len(json) {
		return false
	}
	switch ct[end-len(json)-1] {
	case '+', '/':
		return true
	}
	return false
}

// hasSuffixFold reports whether s ends with suffix, lowercase ASCII, in any
// case.
func hasSuffixFold[T text](s T, suffix string) bool {
	if len(s) < len(suffix) {
		return false
	}
	s = s[len(s)-len(suffix):]
	for i := 0; i < len(suffix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != suffix[i] {
			return false
		}
	}
	return true
}

// jsonText returns the text of raw, a valid JSON string, copying it only
// when it holds escapes.
func jsonText(raw []byte) []byte {
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	return []byte(unquote(raw))
}

// jsonKind names the kind of a valid JSON value, for error messages.
func jsonKind(raw []byte) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// checkedAttrs are the attributes whose values Decode checks; in
// structured mode each must be a JSON string when set. The first four are
// required.
var checkedAttrs = [...]string{attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrDataContentType}

const requiredAttrs = 4

// Indexes into checkedAttrs.
const (
	iSpecVersion = iota
	iID
	iSource
	iType
	iSubject
	iTime
	iDataContentType
)

// checkValue validates the value v of checkedAttrs[i], in either mode.
func checkValue[T text](i int, v T) error {
	name := checkedAttrs[i]
	switch i {
	case iSpecVersion:
		if len(v) != 3 || v[0] != '1' || v[1] != '.' || v[2] != '0' {
			return invalid("specversion %q is not 1.0", clip(string(v)))
		}
	case iID, iType, iDataContentType:
		if len(v) == 0 {
			return invalid("%q is empty", name)
		}
	case iSource:
		if len(v) == 0 {
			return invalid("%q is empty", name)
		}
		if at, why := uriProblem(v); at >= 0 {
			end := min(at+1, len(v))
			if v[at] == '%' {
				end = min(at+3, len(v))
			}
			return invalid("%q %q is not a URI-reference (RFC 3986): %s at byte %d (%q)",
				name, clip(string(v)), why, at, string(v[at:end]))
		}
	case iTime:
		if !isRFC3339(v) {
			return invalid("%q %q is not an RFC 3339 date-time like 2026-01-02T03:04:05Z", name, clip(string(v)))
		}
	}
	return nil
}

// validName reports whether name is [a-z0-9]{1,20}.
func validName[T text](name T) bool {
	if len(name) == 0 || len(name) > maxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
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
	// Every member is checked, each time it occurs; when a name repeats,
	// the last one counts, as in JavaScript's JSON.parse.
	var vals [len(checkedAttrs)][]byte // raw JSON strings; nil when unset
	var corrID, data, dataBase64 []byte
	for k, v := range members(out) {
		var i int
		switch string(k) {
		case memberData:
			data = v
			continue
		case memberDataBase64:
			dataBase64 = v
			continue
		case attrCorrelationID:
			corrID = v
			continue
		case attrSpecVersion:
			i = iSpecVersion
		case attrID:
			i = iID
		case attrSource:
			i = iSource
		case attrType:
			i = iType
		case attrSubject:
			i = iSubject
		case attrTime:
			i = iTime
		case attrDataContentType:
			i = iDataContentType
		default: // an extension, or an attribute Decode does not check
			if !validName(k) {
				return nil, invalid("attribute name %q: %s", clip(string(k)), nameRule)
			}
			continue
		}
		if v[0] == 'n' { // null: unset
			vals[i] = nil
			continue
		}
		if v[0] != '"' {
			return nil, invalid("%q is not a string", checkedAttrs[i])
		}
		if i != iSubject { // a subject may be any string
			if err := checkValue(i, jsonText(v)); err != nil {
				return nil, err
			}
		}
		vals[i] = v
	}
	for i, name := range checkedAttrs[:requiredAttrs] {
		if vals[i] == nil {
			return nil, invalid("missing %q", name)
		}
	}
	if data != nil && dataBase64 != nil {
		return nil, invalid(`both "data" and "data_base64"`)
	}
	if err := checkData(vals[iDataContentType], data, dataBase64); err != nil {
		return nil, err
	}
	ev := &hub.Event{JSON: out}
	unquoteInto(
		[...]*string{&ev.ID, &ev.Source, &ev.Type, &ev.Subject, &ev.CorrelationID},
		[...][]byte{vals[iID], vals[iSource], vals[iType], vals[iSubject], corrID})
	if ev.Subject == "" {
		ev.Subject = itemID(data)
	}
	return ev, nil
}

// unquoteInto sets each *dsts[i] to unquote(raws[i]). The strings without
// escapes share one allocation: decoding is on the hot path.
func unquoteInto(dsts [5]*string, raws [5][]byte) {
	var plain [len(raws)]bool
	n := 0
	for i, r := range raws {
		if len(r) >= 2 && r[0] == '"' && bytes.IndexByte(r[1:len(r)-1], '\\') < 0 {
			plain[i] = true
			n += len(r) - 2
		}
	}
	var b strings.Builder
	b.Grow(n)
	for i, r := range raws {
		if plain[i] {
			b.Write(r[1 : len(r)-1])
		}
	}
	all := b.String()
	for i, r := range raws {
		if !plain[i] {
			*dsts[i] = unquote(r)
			continue
		}
		*dsts[i], all = all[:len(r)-2], all[len(r)-2:]
	}
}

// checkData checks a structured event's data_base64, and that its data
// agrees with its datacontenttype ct (raw JSON string, nil when unset).
func checkData(ct, data, dataBase64 []byte) error {
	if dataBase64 != nil {
		if dataBase64[0] != '"' {
			return invalid(`"data_base64" is not a string`)
		}
		b := jsonText(dataBase64)
		if at := base64Problem(b); at >= 0 {
			if at == len(b) {
				return invalid(`"data_base64" is not valid base64 (RFC 4648, padded): its length %d is not a multiple of 4`, len(b))
			}
			return invalid(`"data_base64" is not valid base64 (RFC 4648, padded): %q at byte %d`, b[at:at+1], at)
		}
		if ct != nil && isJSONRaw(ct) {
			return invalid(`"datacontenttype" %q declares JSON data, which goes in "data", not "data_base64"`, clip(unquote(ct)))
		}
	}
	if data != nil && ct != nil && data[0] != '"' && !isJSONRaw(ct) {
		return invalid(`"datacontenttype" %q does not declare JSON, so "data" must be a string, not %s`, clip(unquote(ct)), jsonKind(data))
	}
	return nil
}

// isJSONRaw is isJSONType for ct, a raw JSON string.
func isJSONRaw(ct []byte) bool {
	return string(ct) == `"application/json"` || isJSONType(jsonText(ct))
}

// DataItemID returns the string member item_id of ev's data, ev an event
// that Decode returned, when the data is a JSON object with one; else "".
// It walks the compact JSON Decode made instead of decoding it again: the
// item service asks it of every command.
func DataItemID(ev *hub.Event) string {
	var id string
	for k, v := range members(ev.JSON) {
		if string(k) == "data" {
			id = itemID(v)
		}
	}
	return id
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

// rank is the place of attribute name in the JSON that Decode produces:
// the known attributes in a fixed order, then the extensions.
func rank(name string) int {
	switch name {
	case attrSpecVersion:
		return 0
	case attrID:
		return 1
	case attrSource:
		return 2
	case attrType:
		return 3
	case attrSubject:
		return 4
	case attrTime:
		return 5
	case attrDataContentType:
		return 6
	case attrDataSchema:
		return 7
	case attrCorrelationID:
		return 8
	}
	return 9
}

// decodeBinary decodes a binary-mode record whose content-type header is
// contentType.
func decodeBinary(hs []kafka.Header, contentType, v []byte) (*hub.Event, error) {
	var inline [16]attr
	attrs := inline[:0]
	if len(hs) > len(inline) {
		attrs = make([]attr, 0, len(hs))
	}
	// The content type and the attribute values share one allocation:
	// decoding is on the hot path. A Builder never changes what it has
	// written, so the strings cut from it stay as they are.
	var values strings.Builder
	n := len(contentType)
	for _, h := range hs {
		if isAttrHeader(h.Key) {
			n += len(h.Value)
		}
	}
	values.Grow(n)
	values.Write(contentType)
	ct := values.String()
	for _, h := range hs {
		if !isAttrHeader(h.Key) {
			continue
		}
		name, err := attrName(h.Key)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(h.Value) {
			return nil, invalid("header %q is not valid UTF-8", clip(h.Key))
		}
		if slices.ContainsFunc(attrs, func(a attr) bool { return a.name == name }) {
			return nil, invalid("more than one header for attribute %q", name)
		}
		start := values.Len()
		values.Write(h.Value)
		attrs = append(attrs, attr{name, values.String()[start:]})
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
	var seen [requiredAttrs]bool
	for _, a := range attrs {
		var i int
		switch a.name {
		case attrSpecVersion:
			i, seen[iSpecVersion] = iSpecVersion, true
		case attrID:
			i, ev.ID, seen[iID] = iID, a.value, true
		case attrSource:
			i, ev.Source, seen[iSource] = iSource, a.value, true
		case attrType:
			i, ev.Type, seen[iType] = iType, a.value, true
		case attrTime:
			i = iTime
		case attrDataContentType:
			i = iDataContentType
		case attrSubject:
			ev.Subject = a.value
			continue
		case attrCorrelationID:
			ev.CorrelationID = a.value
			continue
		default:
			continue
		}
		if err := checkValue(i, a.value); err != nil {
			return nil, fmt.Errorf("%w (header %s%s)", err, headerPrefix, a.name)
		}
	}
	for i, ok := range seen {
		if !ok {
			return nil, invalid("missing %q (header %s%s)", checkedAttrs[i], headerPrefix, checkedAttrs[i])
		}
	}

	// The structured JSON: known attributes in a fixed order (rank),
	// extensions sorted by name, then the data, compacted in place (it is
	// never longer compacted).
	slices.SortFunc(attrs, func(a, b attr) int {
		if ra, rb := rank(a.name), rank(b.name); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.name, b.name)
	})
	jsonData := len(v) > 0 && isJSONType(ct)
	dataMember := memberData
	size := len(dataMember) + 8
	switch {
	case jsonData:
		size += len(v)
	case len(v) > 0:
		dataMember = memberDataBase64
		size = len(dataMember) + 8 + base64.StdEncoding.EncodedLen(len(v)) + 2
	}
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
	if len(v) > 0 {
		out = append(out, ',')
		out = appendJSONString(out, dataMember)
		out = append(out, ':')
		if jsonData {
			if !utf8.Valid(v) {
				return nil, invalid("value is not valid UTF-8")
			}
			start := len(out)
			buf := bytes.NewBuffer(out)
			if err := json.Compact(buf, v); err != nil {
				if ct == "" {
					return nil, invalid(`value is not valid JSON, which no "datacontenttype" means: %v`, err)
				}
				return nil, invalid(`value is not valid JSON, which "datacontenttype" %q declares: %v`, clip(ct), err)
			}
			out = buf.Bytes()
			if ev.Subject == "" {
				ev.Subject = itemID(out[start:])
			}
		} else {
			out = append(out, '"')
			out = base64.StdEncoding.AppendEncode(out, v)
			out = append(out, '"')
		}
	}
	out = append(out, '}')
	ev.JSON = out
	return ev, nil
}

// isAttrHeader reports whether a header named key carries an attribute:
// its name starts with ce_, in any case.
func isAttrHeader(key string) bool {
	return len(key) >= len(headerPrefix) && strings.EqualFold(key[:len(headerPrefix)], headerPrefix)
}

// attrName returns the attribute a binary-mode header key (ce_<name>, any
// case) carries: <name> in lower case, which must be [a-z0-9]{1,20} and not
// "data". Only ASCII letters are folded: a header like "ce_\u212a" (the
// Kelvin sign) is refused, not read as "k".
func attrName(key string) (string, error) {
	name := key[len(headerPrefix):]
	if name == "" {
		return "", invalid("header %q names no attribute", key)
	}
	upper := false
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case 'A' <= c && c <= 'Z':
			upper = true
		default:
			return "", invalid("attribute name %q (header %q): %s", clip(name), clip(key), nameRule)
		}
	}
	if len(name) > maxNameLen {
		return "", invalid("attribute name %q (header %q): %s", clip(name), clip(key), nameRule)
	}
	if upper {
		name = strings.ToLower(name)
	}
	if name == memberData {
		return "", invalid("header %q: data is not an attribute", key)
	}
	return name, nil
}

// isRFC3339 reports whether s is an RFC 3339 date-time (§5.6, with the
// day-of-month limits of §5.7): 2026-01-02T03:04:05Z, with an optional
// fraction of a second and a Z or ±hh:mm offset. As the RFC allows, T and Z
// may be lower case and the second may be 60 (a leap second).
func isRFC3339[T text](s T) bool {
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' && s[10] != 't' || s[13] != ':' || s[16] != ':' {
		return false
	}
	year, month, day := digits(s, 0, 4), digits(s, 5, 2), digits(s, 8, 2)
	hour, minute, second := digits(s, 11, 2), digits(s, 14, 2), digits(s, 17, 2)
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60 {
		return false
	}
	i := len("2006-01-02T15:04:05")
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && '0' <= s[j] && s[j] <= '9' {
			j++
		}
		if j == i+1 || j == len(s) {
			return false
		}
		i = j
	}
	switch s[i] {
	case 'Z', 'z':
		return i+1 == len(s)
	case '+', '-':
		if len(s)-i != len("+07:00") || s[i+3] != ':' {
			return false
		}
		h, m := digits(s, i+1, 2), digits(s, i+4, 2)
		return h >= 0 && h <= 23 && m >= 0 && m <= 59
	}
	return false
}

// digits returns the number that the n decimal digits s[i:i+n] spell, or -1
// if one is not a digit.
func digits[T text](s T, i, n int) int {
	v := 0
	for j := i; j < i+n; j++ {
		c := s[j]
		if c < '0' || c > '9' {
			return -1
		}
		v = v*10 + int(c-'0')
	}
	return v
}

// daysIn returns the number of days of month in year.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// base64Problem returns the index of the first byte that keeps s from being
// padded standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, "=" only as the
// padding of the last quantum), len(s) if only its length is wrong, or -1
// if s is valid. Line breaks are not allowed.
func base64Problem(s []byte) int {
	n := len(s)
	for i, c := range s {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
		case c == '=' && n%4 == 0 && (i == n-1 || i == n-2 && s[n-1] == '='):
		default:
			return i
		}
	}
	if n%4 != 0 {
		return n
	}
	return -1
}

// Character classes of RFC 3986 that uriProblem combines.
const (
	uriRegName  = 1 << iota // unreserved and sub-delims: what reg-name allows besides pct-encoded
	uriColon                // ":"
	uriAt                   // "@"
	uriSlash                // "/"
	uriQuestion             // "?"

	uriUserinfo  = uriRegName | uriColon
	uriPChar     = uriRegName | uriColon | uriAt
	uriNoColon   = uriRegName | uriAt // the first segment of a relative path
	uriPath      = uriPChar | uriSlash
	uriQueryFrag = uriPChar | uriSlash | uriQuestion
)

// uriClass holds the classes of each byte.
var uriClass = func() (c [256]uint8) {
	for _, r := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=" {
		c[r] = uriRegName
	}
	c[':'], c['@'], c['/'], c['?'] = uriColon, uriAt, uriSlash, uriQuestion
	return c
}()

// Why uriProblem refuses a URI-reference.
const (
	whyChar       = "a character that must be percent-encoded here"
	whyEscape     = "a bad percent-escape"
	whyColon      = "a colon in the first segment of a reference without a scheme"
	whyIPLiteral  = "a bad IP literal"
	whyPort       = "a port that is not digits"
	whyIPAfterEnd = "something after an IP literal other than a port"
)

// uriProblem returns the index of the first byte that keeps s from being a
// URI-reference (RFC 3986 §4.1) and why, or -1 and "". It checks the
// grammar byte by byte, without allocating: url.Parse accepts much that
// RFC 3986 refuses (spaces, bad percent-escapes, non-ASCII).
func uriProblem[T text](s T) (int, string) {
	// The common case first: a path or //host/path of plain characters.
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		plain = uriClass[s[i]]&(uriRegName|uriSlash) != 0
	}
	if plain {
		return -1, ""
	}
	// A scheme is a letter, then letters, digits, "+", "-", "."; it ends
	// at a ":" before any "/", "?" or "#". Without one, a ":" in the first
	// segment is refused (RFC 3986 §4.2).
	rest, off, scheme := s, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' {
			if isScheme(s[:i]) {
				rest, off, scheme = s[i+1:], i+1, true
			}
			break
		}
		if c == '/' || c == '?' || c == '#' {
			break
		}
	}
	hier, query, frag := len(rest), -1, -1 // where each part starts in rest
	for i := 0; i < len(rest); i++ {
		if rest[i] == '#' {
			hier, frag = min(hier, i), i+1
			break
		}
		if rest[i] == '?' && query < 0 {
			hier, query = i, i+1
		}
	}
	path, pathOff := rest[:hier], off
	if len(path) >= 2 && path[0] == '/' && path[1] == '/' {
		end := 2
		for end < len(path) && path[end] != '/' {
			end++
		}
		if at, why := authorityProblem(path[2:end], off+2); at >= 0 {
			return at, why
		}
		path, pathOff = path[end:], off+end
	} else if !scheme {
		end := 0
		for end < len(path) && path[end] != '/' {
			end++
		}
		if at, why := scanURI(path[:end], pathOff, uriNoColon); at >= 0 {
			if path[at-pathOff] == ':' {
				why = whyColon
			}
			return at, why
		}
		path, pathOff = path[end:], pathOff+end
	}
	if at, why := scanURI(path, pathOff, uriPath); at >= 0 {
		return at, why
	}
	if query >= 0 {
		end := len(rest)
		if frag >= 0 {
			end = frag - 1
		}
		if at, why := scanURI(rest[query:end], off+query, uriQueryFrag); at >= 0 {
			return at, why
		}
	}
	if frag >= 0 {
		return scanURI(rest[frag:], off+frag, uriQueryFrag)
	}
	return -1, ""
}

// isScheme reports whether s is a URI scheme.
func isScheme[T text](s T) bool {
	if len(s) == 0 || !('a' <= s[0]|0x20 && s[0]|0x20 <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// scanURI returns the index (plus off) of the first byte of s that is
// neither in the classes allow nor a percent-escape, and why; or -1 and "".
func scanURI[T text](s T, off int, allow uint8) (int, string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if uriClass[c]&allow != 0 {
			continue
		}
		if c != '%' {
			return off + i, whyChar
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return off + i, whyEscape
		}
		i += 2
	}
	return -1, ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f'
}

// authorityProblem checks an authority, [userinfo "@"] host [":" port],
// that starts at off in the reference.
func authorityProblem[T text](a T, off int) (int, string) {
	for i := 0; i < len(a); i++ {
		if a[i] == '@' {
			if at, why := scanURI(a[:i], off, uriUserinfo); at >= 0 {
				return at, why
			}
			a, off = a[i+1:], off+i+1
			break
		}
	}
	port := len(a) // where the port starts, after its ":"
	if len(a) > 0 && a[0] == '[' {
		end := 1
		for end < len(a) && a[end] != ']' {
			end++
		}
		if end == len(a) || !isIPLiteral(a[1:end]) {
			return off, whyIPLiteral
		}
		switch {
		case end+1 == len(a):
		case a[end+1] == ':':
			port = end + 2
		default:
			return off + end + 1, whyIPAfterEnd
		}
	} else {
		host := len(a)
		for i := 0; i < len(a); i++ {
			if a[i] == ':' {
				host, port = i, i+1
				break
			}
		}
		if at, why := scanURI(a[:host], off, uriRegName); at >= 0 {
			return at, why
		}
	}
	for i := port; i < len(a); i++ {
		if a[i] < '0' || a[i] > '9' {
			return off + i, whyPort
		}
	}
	return -1, ""
}

// isIPLiteral reports whether s, the inside of "[...]", is an IPv6 address
// (without a zone) or an IPvFuture.
func isIPLiteral[T text](s T) bool {
	if len(s) > 0 && s[0]|0x20 == 'v' {
		i := 1
		for i < len(s) && isHex(s[i]) {
			i++
		}
		if i == 1 || i+1 >= len(s) || s[i] != '.' {
			return false
		}
		for i++; i < len(s); i++ {
			if uriClass[s[i]]&uriUserinfo == 0 {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			return false // a zone: RFC 6874, not RFC 3986
		}
	}
	ip, err := netip.ParseAddr(string(s))
	return err == nil && ip.Is6()
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
func clip(s string) string { return hub.Clip(s, 64) }
