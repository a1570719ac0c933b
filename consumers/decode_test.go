package consumers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/hub"
)

// hdrs builds headers from key, value pairs.
func hdrs(kv ...string) []kafka.Header {
	h := make([]kafka.Header, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return h
}

// binaryHeaders are the required attributes in binary mode, plus extra.
func binaryHeaders(extra ...string) []kafka.Header {
	return hdrs(append([]string{"ce_specversion", "1.0", "ce_id", "e1", "ce_source", "/platform", "ce_type", "item.reported"}, extra...)...)
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		msg  kafka.Message
		want hub.Event
	}{
		{
			name: "binary with every attribute",
			msg: kafka.Message{
				Headers: binaryHeaders("ce_subject", "item-1", "ce_time", "2026-01-02T03:04:05Z", "ce_correlationid", "c-1",
					"ce_traceparent", "tp", "content-type", "application/json"),
				Value: []byte("{ \"item_id\": \"item-1\",\n  \"reason\": \"spam\" }\n"),
			},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported", Subject: "item-1", CorrelationID: "c-1",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","subject":"item-1",` +
					`"time":"2026-01-02T03:04:05Z","datacontenttype":"application/json","correlationid":"c-1","traceparent":"tp",` +
					`"data":{"item_id":"item-1","reason":"spam"}}`)},
		},
		{
			name: "binary header names in any case",
			msg: kafka.Message{
				Headers: hdrs("CE_SpecVersion", "1.0", "Ce_Id", "e2", "ce_SOURCE", "/s", "ce_type", "t", "Content-Type", "application/json"),
				Value:   []byte(`1`),
			},
			want: hub.Event{ID: "e2", Source: "/s", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"e2","source":"/s","type":"t","datacontenttype":"application/json","data":1}`)},
		},
		{
			name: "binary without content type or value has no data",
			msg:  kafka.Message{Headers: binaryHeaders()},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported"}`)},
		},
		{
			name: "binary without content type is JSON",
			msg:  kafka.Message{Headers: binaryHeaders(), Value: []byte(` ["a", 2] `)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","data":["a",2]}`)},
		},
		{
			name: "binary +json content type with parameters",
			msg:  kafka.Message{Headers: binaryHeaders("content-type", "application/vnd.acme+JSON; charset=utf-8"), Value: []byte(`{"a" : true}`)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"application/vnd.acme+JSON; charset=utf-8","data":{"a":true}}`)},
		},
		{
			name: "binary non-JSON data goes to data_base64",
			msg:  kafka.Message{Headers: binaryHeaders("content-type", "text/plain"), Value: []byte("hello\nworld")},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"text/plain","data_base64":"aGVsbG8Kd29ybGQ="}`)},
		},
		{
			name: "binary ce_datacontenttype without content-type header",
			msg:  kafka.Message{Headers: binaryHeaders("ce_datacontenttype", "application/octet-stream"), Value: []byte{0, 1, 2}},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"application/octet-stream","data_base64":"AAEC"}`)},
		},
		{
			name: "binary content-type header wins over ce_datacontenttype",
			msg:  kafka.Message{Headers: binaryHeaders("ce_datacontenttype", "text/plain", "content-type", "application/json"), Value: []byte(`"x"`)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"application/json","data":"x"}`)},
		},
		{
			name: "binary subject falls back to data item_id",
			msg:  kafka.Message{Headers: binaryHeaders("content-type", "application/json"), Value: []byte(`{"item_id":"item-5","n":1}`)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported", Subject: "item-5",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"application/json","data":{"item_id":"item-5","n":1}}`)},
		},
		{
			name: "binary subject wins over data item_id",
			msg:  kafka.Message{Headers: binaryHeaders("ce_subject", "item-6"), Value: []byte(`{"item_id":"item-5"}`)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported", Subject: "item-6",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","subject":"item-6","data":{"item_id":"item-5"}}`)},
		},
		{
			name: "binary attribute values are escaped onto one line",
			msg:  kafka.Message{Headers: binaryHeaders("ce_note", "a\"b\\c\nd\re\tf\x01g\u2028h\u2029é")},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","note":"a\"b\\c\nd\re\tf\u0001g\u2028h\u2029é"}`)},
		},
		{
			name: "binary extensions sorted after known attributes",
			msg:  kafka.Message{Headers: hdrs("ce_zeta", "z", "ce_alpha", "a", "ce_type", "t", "ce_correlationid", "c", "ce_source", "/s", "ce_id", "i", "ce_specversion", "1.0")},
			want: hub.Event{ID: "i", Source: "/s", Type: "t", CorrelationID: "c",
				JSON: []byte(`{"specversion":"1.0","id":"i","source":"/s","type":"t","correlationid":"c","alpha":"a","zeta":"z"}`)},
		},
		{
			name: "structured is compacted and keeps every member",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json; charset=UTF-8", "ce_type", "ignored"),
				Value: []byte("{\n  \"specversion\": \"1.0\",\n  \"type\": \"takedown.confirmed\",\n  \"id\": \"e9\",\n  \"source\": \"/items\",\n" +
					"  \"subject\": \"item-9\",\n  \"correlationid\": \"c-9\",\n  \"extra\": [1, {\"k\": null}],\n  \"data\": {\"removed_from\": [\"g-1\"]}\n}\n"),
			},
			want: hub.Event{ID: "e9", Source: "/items", Type: "takedown.confirmed", Subject: "item-9", CorrelationID: "c-9",
				JSON: []byte(`{"specversion":"1.0","type":"takedown.confirmed","id":"e9","source":"/items","subject":"item-9","correlationid":"c-9","extra":[1,{"k":null}],"data":{"removed_from":["g-1"]}}`)},
		},
		{
			name: "structured content type in any case",
			msg: kafka.Message{
				Headers: hdrs("Content-Type", "Application/CloudEvents+JSON"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t"}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t", JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t"}`)},
		},
		{
			name: "structured null subject is unset and a non-string correlationid is not routed on",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","subject":null,"correlationid":{"x":1},"data":{"item_id":"item-3"}}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t", Subject: "item-3",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","subject":null,"correlationid":{"x":1},"data":{"item_id":"item-3"}}`)},
		},
		{
			name: "structured null optional attributes and extensions are unset",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","time":null,"datacontenttype":null,"ext":null,"data":{"k":1}}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","time":null,"datacontenttype":null,"ext":null,"data":{"k":1}}`)},
		},
		{
			name: "structured text data under a non-JSON datacontenttype",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"application/xml","data":"<much wow=\"xml\"/>"}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"application/xml","data":"<much wow=\"xml\"/>"}`)},
		},
		{
			name: "structured */json and */*+json datacontenttype with any JSON data",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":" Text/JSON ; charset=utf-8","data":[1]}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":" Text/JSON ; charset=utf-8","data":[1]}`)},
		},
		{
			name: "structured data_base64 without datacontenttype, and a 20-character extension",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66","type":"t","abcdefghij0123456789":true,"data_base64":""}`),
			},
			want: hub.Event{ID: "a", Source: "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66","type":"t","abcdefghij0123456789":true,"data_base64":""}`)},
		},
		{
			name: "binary text/json content type is JSON",
			msg:  kafka.Message{Headers: binaryHeaders("content-type", "text/json"), Value: []byte(`{"a":1}`)},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","datacontenttype":"text/json","data":{"a":1}}`)},
		},
		{
			name: "binary time with offset and fraction, 20-character extension in upper case",
			msg:  kafka.Message{Headers: binaryHeaders("ce_time", "2024-02-29t23:59:60.123456789+05:30", "CE_ABCDEFGHIJ0123456789", "x")},
			want: hub.Event{ID: "e1", Source: "/platform", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","time":"2024-02-29t23:59:60.123456789+05:30","abcdefghij0123456789":"x"}`)},
		},
		{
			name: "structured escaped names, repeated members and tricky data",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value: []byte(`{"spec\u0076ersion":"1.0","id":"a\"b","source":"/s","type":"t","subject":"","subject":"","type":"t2",` +
					`"data":{"note":"}{\"item_id\":\"fake\"}","nested":{"item_id":"no"},"list":[{"item_id":"no"}],"item_id":"item-7"}}`),
			},
			want: hub.Event{ID: `a"b`, Source: "/s", Type: "t2", Subject: "item-7",
				JSON: []byte(`{"spec\u0076ersion":"1.0","id":"a\"b","source":"/s","type":"t","subject":"","subject":"","type":"t2",` +
					`"data":{"note":"}{\"item_id\":\"fake\"}","nested":{"item_id":"no"},"list":[{"item_id":"no"}],"item_id":"item-7"}}`)},
		},
		{
			name: "structured data_base64 is kept",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"text/plain","data_base64":"aGk="}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"text/plain","data_base64":"aGk="}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.msg)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.ID != tt.want.ID || got.Source != tt.want.Source || got.Type != tt.want.Type ||
				got.Subject != tt.want.Subject || got.CorrelationID != tt.want.CorrelationID {
				t.Errorf("attributes = %+v\nwant %+v", *got, tt.want)
			}
			if !bytes.Equal(got.JSON, tt.want.JSON) {
				t.Errorf("JSON =\n%s\nwant\n%s", got.JSON, tt.want.JSON)
			}
			checkEventJSON(t, got)
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	structured := hdrs("content-type", "application/cloudevents+json")
	tests := []struct {
		name string
		msg  kafka.Message
		want string // in the error
	}{
		{"nothing at all", kafka.Message{}, `missing "specversion"`},
		{"binary bad JSON", kafka.Message{Headers: binaryHeaders("content-type", "application/json"), Value: []byte(`{"item_id":`)}, "value is not valid JSON"},
		{"binary JSON with trailing data", kafka.Message{Headers: binaryHeaders(), Value: []byte(`{} {}`)}, "value is not valid JSON"},
		{"binary JSON not UTF-8", kafka.Message{Headers: binaryHeaders(), Value: []byte("\"\xff\"")}, "not valid UTF-8"},
		{"binary missing type", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "/s")}, `missing "type"`},
		{"binary missing id", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_source", "/s", "ce_type", "t")}, `missing "id"`},
		{"binary missing source", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_type", "t")}, `missing "source"`},
		{"binary wrong specversion", kafka.Message{Headers: hdrs("ce_specversion", "0.3", "ce_id", "1", "ce_source", "/s", "ce_type", "t")}, `specversion "0.3" is not 1.0`},
		{"binary empty id", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "", "ce_source", "/s", "ce_type", "t")}, `"id" is empty`},
		{"binary duplicate attribute", kafka.Message{Headers: binaryHeaders("CE_ID", "e2")}, `more than one header for attribute "id"`},
		{"binary bad attribute name", kafka.Message{Headers: binaryHeaders("ce_foo-bar", "x")}, "attribute names hold only"},
		{"binary empty attribute name", kafka.Message{Headers: binaryHeaders("ce_", "x")}, "names no attribute"},
		{"binary data header", kafka.Message{Headers: binaryHeaders("ce_data", "x")}, "data is not an attribute"},
		{"binary header not UTF-8", kafka.Message{Headers: binaryHeaders("ce_subject", "\xff")}, `"ce_subject" is not valid UTF-8`},
		{"two content-type headers", kafka.Message{Headers: binaryHeaders("content-type", "application/json", "Content-Type", "text/plain")}, "more than one content-type"},
		{"structured not JSON", kafka.Message{Headers: structured, Value: []byte(`specversion: 1.0`)}, "value is not valid JSON"},
		{"structured empty", kafka.Message{Headers: structured, Value: []byte(" \n")}, "value is empty"},
		{"structured array", kafka.Message{Headers: structured, Value: []byte(`[{"specversion":"1.0"}]`)}, "not a JSON object"},
		{"structured trailing data", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t"} x`)}, "value is not valid JSON"},
		{"structured missing type", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"1.0","id":"a","source":"/s"}`)}, `missing "type"`},
		{"structured type not a string", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":7}`)}, `"type" is not a string`},
		{"structured specversion number", kafka.Message{Headers: structured, Value: []byte(`{"specversion":1.0,"id":"a","source":"/s","type":"t"}`)}, `"specversion" is not a string`},
		{"structured wrong specversion", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"0.3","id":"a","source":"/s","type":"t"}`)}, `specversion "0.3" is not 1.0`},
		{"structured empty source", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"1.0","id":"a","source":"","type":"t"}`)}, `"source" is empty`},
		{"structured data and data_base64", kafka.Message{Headers: structured, Value: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","data":1,"data_base64":"aGk="}`)}, `both "data" and "data_base64"`},
		{"structured not UTF-8", kafka.Message{Headers: structured, Value: []byte("{\"specversion\":\"1.0\",\"id\":\"\xfe\",\"source\":\"/s\",\"type\":\"t\"}")}, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.msg)
			if err == nil {
				t.Fatalf("no error; event %s", ev.JSON)
			}
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("error %q does not wrap ErrInvalidEvent", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "consumers: ") {
				t.Errorf("error %q: want %q in it", err, tt.want)
			}
		})
	}
}

// checkEventJSON checks what Decode promises of every event: one line of
// valid JSON, an object with the required attributes matching the Event.
func checkEventJSON(t testing.TB, ev *hub.Event) {
	t.Helper()
	if bytes.ContainsAny(ev.JSON, "\r\n") {
		t.Fatalf("JSON has a line break: %q", ev.JSON)
	}
	if !json.Valid(ev.JSON) {
		t.Fatalf("JSON not valid: %q", ev.JSON)
	}
	var m map[string]any
	if err := json.Unmarshal(ev.JSON, &m); err != nil {
		t.Fatalf("JSON is not an object: %q: %v", ev.JSON, err)
	}
	if m["specversion"] != "1.0" {
		t.Fatalf("specversion %v in %q", m["specversion"], ev.JSON)
	}
	for name, want := range map[string]string{"id": ev.ID, "source": ev.Source, "type": ev.Type} {
		if got, _ := m[name].(string); got == "" || got != want {
			t.Fatalf("%s = %v in JSON, %q in Event: %q", name, m[name], want, ev.JSON)
		}
	}
	// Routing attributes: strings only; the subject falls back to the
	// data's item_id.
	subject, _ := m["subject"].(string)
	if subject == "" {
		if data, ok := m["data"].(map[string]any); ok {
			subject, _ = data["item_id"].(string)
		}
	}
	if subject != ev.Subject {
		t.Fatalf("subject %q from JSON, %q in Event: %q", subject, ev.Subject, ev.JSON)
	}
	if c, _ := m["correlationid"].(string); c != ev.CorrelationID {
		t.Fatalf("correlationid %q in JSON, %q in Event", c, ev.CorrelationID)
	}
}

// TestDecodeRules has one case per rule of SPEC §1.1 per mode; the reason,
// which becomes the dead letter's switchboard-error header, must name the
// attribute. Binary mode cannot break some rules (a header value is always
// a string, and there is no data_base64 member); its cases there are the
// nearest thing a producer can send.
func TestDecodeRules(t *testing.T) {
	structured := func(members string) kafka.Message {
		return kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"), Value: []byte("{" + members + "}")}
	}
	const req = `"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported"`
	tests := []struct {
		name string
		msg  kafka.Message
		attr string // the reason names it
		want string // and says this
	}{
		// specversion is "1.0".
		{"binary specversion", kafka.Message{Headers: hdrs("ce_specversion", "1.1", "ce_id", "1", "ce_source", "/s", "ce_type", "t")}, "specversion", `specversion "1.1" is not 1.0`},
		{"structured specversion", structured(`"specversion":"1.1","id":"1","source":"/s","type":"t"`), "specversion", `specversion "1.1" is not 1.0`},
		{"structured specversion number", structured(`"specversion":1.0,"id":"1","source":"/s","type":"t"`), "specversion", `"specversion" is not a string`},

		// id, source, type are non-empty strings.
		{"binary id missing", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_source", "/s", "ce_type", "t")}, `"id"`, `missing "id" (header ce_id)`},
		{"binary source empty", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "", "ce_type", "t")}, `"source"`, `"source" is empty (header ce_source)`},
		{"binary type empty", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "/s", "ce_type", "")}, `"type"`, `"type" is empty (header ce_type)`},
		{"structured id number", structured(`"specversion":"1.0","id":1,"source":"/s","type":"t"`), `"id"`, `"id" is not a string`},
		{"structured source null", structured(`"specversion":"1.0","id":"1","source":null,"type":"t"`), `"source"`, `missing "source"`},
		{"structured type empty", structured(`"specversion":"1.0","id":"1","source":"/s","type":""`), `"type"`, `"type" is empty`},

		// source is a URI-reference (RFC 3986).
		{"binary source not a URI-reference", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "::not a uri ::%zz", "ce_type", "t")}, `"source"`,
			`"source" "::not a uri ::%zz" is not a URI-reference (RFC 3986): a colon in the first segment of a reference without a scheme at byte 0 (":") (header ce_source)`},
		{"binary source with a space", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "/a b", "ce_type", "t")}, `"source"`, `must be percent-encoded here at byte 2 (" ")`},
		{"binary source with a bad IP literal", kafka.Message{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "//[::1/p", "ce_type", "t")}, `"source"`, `a bad IP literal at byte 2`},
		{"structured source not a URI-reference", structured(`"specversion":"1.0","id":"1","source":"::not a uri ::%zz","type":"t"`), `"source"`,
			`"source" "::not a uri ::%zz" is not a URI-reference (RFC 3986): a colon in the first segment`},
		{"structured source with a bad percent-escape", structured(`"specversion":"1.0","id":"1","source":"/a%zz","type":"t"`), `"source"`, `a bad percent-escape at byte 2 ("%zz")`},
		{"structured source with a bad port", structured(`"specversion":"1.0","id":"1","source":"https://example.com:44x/","type":"t"`), `"source"`, `a port that is not digits at byte 22`},
		{"structured source not ASCII", structured(`"specversion":"1.0","id":"1","source":"/caf\u00e9","type":"t"`), `"source"`, `must be percent-encoded here at byte 4`},

		// time, when present, is RFC 3339.
		{"binary time", binaryMsg("ce_time", "yesterday"), `"time"`, `"time" "yesterday" is not an RFC 3339 date-time like 2026-01-02T03:04:05Z (header ce_time)`},
		{"binary time without offset", binaryMsg("ce_time", "2026-01-02T03:04:05"), `"time"`, `is not an RFC 3339 date-time`},
		{"binary time on February 30", binaryMsg("ce_time", "2026-02-30T03:04:05Z"), `"time"`, `is not an RFC 3339 date-time`},
		{"structured time", structured(req + `,"time":"yesterday"`), `"time"`, `"time" "yesterday" is not an RFC 3339 date-time`},
		{"structured time with a space", structured(req + `,"time":"2026-01-02 03:04:05Z"`), `"time"`, `is not an RFC 3339 date-time`},
		{"structured time offset out of range", structured(req + `,"time":"2026-01-02T03:04:05+24:00"`), `"time"`, `is not an RFC 3339 date-time`},
		{"structured time number", structured(req + `,"time":1767322800`), `"time"`, `"time" is not a string`},

		// subject, when present, is a string.
		{"binary subject not UTF-8", binaryMsg("ce_subject", "\xff"), "subject", `header "ce_subject" is not valid UTF-8`},
		{"structured subject number", structured(req + `,"subject":5`), `"subject"`, `"subject" is not a string`},

		// Extension names are [a-z0-9]{1,20}.
		{"binary extension name", binaryMsg("ce_foo-bar", "x"), `"foo-bar"`, `attribute name "foo-bar" (header "ce_foo-bar"): attribute names hold only a-z and 0-9, 1 to 20 of them`},
		{"binary extension name too long", binaryMsg("ce_abcdefghij0123456789x", "x"), `"abcdefghij0123456789x"`, `attribute names hold only`},
		{"binary extension name not ASCII", binaryMsg("ce_\u212aey", "x"), "\u212aey", `attribute names hold only`},
		{"structured extension name in upper case", structured(req + `,"Foo":"x"`), `"Foo"`, `attribute name "Foo": attribute names hold only a-z and 0-9, 1 to 20 of them`},
		{"structured extension name too long", structured(req + `,"abcdefghij0123456789x":1`), `"abcdefghij0123456789x"`, `attribute names hold only`},
		{"structured extension name with underscore", structured(req + `,"foo_bar":1`), `"foo_bar"`, `attribute names hold only`},
		{"structured extension name empty", structured(req + `,"":1`), `attribute name ""`, `attribute names hold only`},

		// data_base64 is valid base64.
		{"binary data_base64 header", binaryMsg("ce_data_base64", "aGk="), `"data_base64"`, `attribute names hold only`},
		{"structured data_base64", structured(req + `,"data_base64":"!!!"`), `"data_base64"`, `"data_base64" is not valid base64 (RFC 4648, padded): "!" at byte 0`},
		{"structured data_base64 unpadded", structured(req + `,"data_base64":"aGk"`), `"data_base64"`, `its length 3 is not a multiple of 4`},
		{"structured data_base64 null", structured(req + `,"data_base64":null`), `"data_base64"`, `"data_base64" is not a string`},

		// datacontenttype agrees with the data.
		{"binary datacontenttype JSON with data not JSON", binaryMsg("content-type", "application/json; charset=utf-8", "value", "hi"), `"datacontenttype"`,
			`value is not valid JSON, which "datacontenttype" "application/json; charset=utf-8" declares`},
		{"binary datacontenttype empty", binaryMsg("ce_datacontenttype", ""), `"datacontenttype"`, `"datacontenttype" is empty (header ce_datacontenttype)`},
		{"structured datacontenttype JSON with data_base64", structured(req + `,"datacontenttype":"application/json","data_base64":"aGk="`), `"datacontenttype"`,
			`"datacontenttype" "application/json" declares JSON data, which goes in "data", not "data_base64"`},
		{"structured datacontenttype not JSON with JSON data", structured(req + `,"datacontenttype":"text/plain","data":{"a":1}`), `"datacontenttype"`,
			`"datacontenttype" "text/plain" does not declare JSON, so "data" must be a string, not an object`},
		{"structured datacontenttype empty", structured(req + `,"datacontenttype":"","data":{}`), `"datacontenttype"`, `"datacontenttype" is empty`},
		{"structured datacontenttype number", structured(req + `,"datacontenttype":7`), `"datacontenttype"`, `"datacontenttype" is not a string`},

		// Formats that are not supported.
		{"avro format", binaryMsg("content-type", "application/cloudevents+avro", "value", "\x00\x01"), "application/cloudevents+avro",
			`content-type "application/cloudevents+avro": this event format is not supported`},
		{"protobuf format", binaryMsg("content-type", "Application/CloudEvents+Protobuf"), "Application/CloudEvents+Protobuf", `this event format is not supported`},
		{"batch mode", kafka.Message{Headers: hdrs("content-type", "application/cloudevents-batch+json"), Value: []byte(`[{` + req + `}]`)},
			"application/cloudevents-batch+json", `content-type "application/cloudevents-batch+json": batch mode is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.msg)
			if err == nil {
				t.Fatalf("no error; event %s", ev.JSON)
			}
			reason := err.Error()
			if !errors.Is(err, ErrInvalidEvent) || !strings.HasPrefix(reason, "consumers: invalid event: ") {
				t.Errorf("reason %q does not wrap ErrInvalidEvent", reason)
			}
			if !strings.Contains(reason, tt.attr) {
				t.Errorf("reason %q does not name %s", reason, tt.attr)
			}
			if !strings.Contains(reason, tt.want) {
				t.Errorf("reason %q\nwant %q in it", reason, tt.want)
			}
			if strings.ContainsAny(reason, "\r\n") {
				t.Errorf("reason %q has a line break", reason)
			}
			if why := oracleRecord(tt.msg); why == "" {
				t.Errorf("the test's oracle finds the record valid")
			}
		})
	}
}

// binaryMsg is a valid binary-mode record with the headers kv added; the
// pseudo-header "value" sets the value.
func binaryMsg(kv ...string) kafka.Message {
	var m kafka.Message
	var extra []string
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "value" {
			m.Value = []byte(kv[i+1])
			continue
		}
		extra = append(extra, kv[i], kv[i+1])
	}
	m.Headers = binaryHeaders(extra...)
	return m
}

// TestDecodeValidSources shows the forms of URI-reference that source may
// take, in both modes.
func TestDecodeValidSources(t *testing.T) {
	for _, src := range validURIs {
		for _, structured := range []bool{false, true} {
			m := kafka.Message{Headers: binaryHeaders()}
			m.Headers[2].Value = []byte(src)
			if structured {
				b, _ := json.Marshal(src)
				m = kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"),
					Value: []byte(`{"specversion":"1.0","id":"1","source":` + string(b) + `,"type":"t"}`)}
			}
			ev, err := Decode(m)
			if err != nil {
				t.Errorf("source %q (structured %v): %v", src, structured, err)
				continue
			}
			if ev.Source != src {
				t.Errorf("Source = %q, want %q", ev.Source, src)
			}
		}
	}
}

// URI-references to test uriProblem and the test's own regexp against.
var (
	validURIs = []string{
		"/platform", "/switchboard/itemsvc", "platform", ".", "..", "./a:b", "#", "?", "?a=b/c?d#e/f?",
		"https://github.com/cloudevents", "mailto:cncf-wg-serverless@lists.cncf.io", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
		"cloudevents/spec/pull/123", "/sensors/tn-1234567/alerts", "1-555-123-4567", "a:", "a+b-c.d:x", "file:///etc/hosts",
		"//host", "//", "//user:pass@host:8080/p%20q?x#y", "//@host", "//host:", "//[::1]", "//[::1]:80", "//[v1.fe80::a+en1]",
		"//[2001:db8::7]/c=GB?objectClass?one", "//[::ffff:192.0.2.1]", "//[1:2:3:4:5:6:7:8]", "//[1:2:3:4:5:6:7::]", "//[::1:2:3:4:5:6:7]",
		"ldap://[2001:db8::7]/c=GB", "tel:+1-816-555-1212", "news:comp.infosystems.www.servers.unix", "x:%41%2f", "//h%41st",
		"/a/b;c=d,e!$&'()*+=~_.-@:", "A:b", "a:/b//c", "a://", "g;x?y#s", "../../g",
	}
	invalidURIs = []string{
		"::not a uri ::%zz", ":", ":a", "1a:b", "a b", "/a b", "/%", "/%4", "/%4g", "/a#b#c", "/a\"b", "/a<b>", "/a\\b", "/a^b", "/a`b", "/a{b}", "/a|b",
		"/caf\u00e9", "/a\x00", "/a\n", "//a b", "//[::1", "//[::1]x", "//[::1]:8a", "//[1.2.3.4]", "//[fe80::1%25en0]", "//[v.x]", "//[v1.]", "//[vz.x]",
		"//[v1.x%41]", "//h:8:8", "//u@h@h", "//h:x", "//[::1::]", "//[1:2:3:4:5:6:7:8:9]", "//[::01.2.3.4]", "//h^", "a:b c", "//u[@h", "?a b", "#a b",
	}
)

func TestURIReference(t *testing.T) {
	for _, s := range validURIs {
		if at, why := uriProblem(s); at >= 0 {
			t.Errorf("%q: %s at byte %d", s, why, at)
		}
		if !uriRE.MatchString(s) {
			t.Errorf("%q: the test's regexp refuses it", s)
		}
	}
	for _, s := range invalidURIs {
		if at, _ := uriProblem(s); at < 0 || at >= len(s) {
			t.Errorf("%q: uriProblem = %d", s, at)
		}
		if uriRE.MatchString(s) {
			t.Errorf("%q: the test's regexp accepts it", s)
		}
	}
}

func TestRFC3339(t *testing.T) {
	valid := []string{"2026-01-02T03:04:05Z", "2026-01-02t03:04:05z", "2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.123456789012-00:00",
		"2024-02-29T00:00:00+23:59", "2000-02-29T23:59:59Z", "1990-12-31T23:59:60Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00"}
	invalid := []string{"", "yesterday", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02 03:04:05Z", "2026-01-02T03:04:05.Z", "2026-01-02T03:04:05,1Z",
		"2026-01-02T03:04:05+0100", "2026-01-02T03:04:05+01", "2026-01-02T03:04:05+24:00", "2026-01-02T03:04:05+01:60", "2026-13-02T03:04:05Z",
		"2026-00-02T03:04:05Z", "2026-01-00T03:04:05Z", "2026-04-31T03:04:05Z", "2100-02-29T03:04:05Z", "2026-01-02T24:00:00Z", "2026-01-02T03:60:05Z",
		"2026-01-02T03:04:61Z", "2026-01-02T03:04:05ZZ", "2026-01-02T03:04:05Z ", " 2026-01-02T03:04:05Z", "+2026-01-02T03:04:05Z", "2026-1-02T03:04:05Z",
		"２026-01-02T03:04:05Z"}
	for _, s := range valid {
		if !isRFC3339(s) || !oracleTime(s) {
			t.Errorf("%q: isRFC3339 %v, the test's oracle %v; want both true", s, isRFC3339(s), oracleTime(s))
		}
	}
	for _, s := range invalid {
		if isRFC3339(s) || oracleTime(s) {
			t.Errorf("%q: isRFC3339 %v, the test's oracle %v; want both false", s, isRFC3339(s), oracleTime(s))
		}
	}
}

// TestRFC3339Calendar compares isRFC3339 with the oracle on every day of
// leap and common years and every hour, minute and second, in and out of
// range.
func TestRFC3339Calendar(t *testing.T) {
	check := func(s string) {
		t.Helper()
		if isRFC3339(s) != oracleTime(s) {
			t.Errorf("%q: isRFC3339 %v, the test's oracle %v", s, isRFC3339(s), oracleTime(s))
		}
	}
	for _, year := range []int{1900, 2000, 2023, 2024} {
		for month := 0; month <= 13; month++ {
			for day := 0; day <= 32; day++ {
				check(fmt.Sprintf("%04d-%02d-%02dT00:00:00Z", year, month, day))
			}
		}
	}
	for n := 0; n <= 99; n++ {
		check(fmt.Sprintf("2026-01-02T%02d:00:00Z", n))
		check(fmt.Sprintf("2026-01-02T00:%02d:00Z", n))
		check(fmt.Sprintf("2026-01-02T00:00:%02dZ", n))
		check(fmt.Sprintf("2026-01-02T00:00:00+%02d:00", n))
		check(fmt.Sprintf("2026-01-02T00:00:00-00:%02d", n))
	}
}

func TestBase64(t *testing.T) {
	for s, want := range map[string]bool{"": true, "aGk=": true, "aGVsbG8Kd29ybGQ=": true, "AAEC": true, "+/+/": true, "YQ==": true, "YR==": true,
		"!!!": false, "aGk": false, "a===": false, "====": false, "aG=k": false, "YQ=": false, "aGk=aGk=": false, "aGk=\n": false, "aG\nk=": false, "aGk-": false, "aGk_": false} {
		if got := base64Problem([]byte(s)) < 0; got != want || oracleBase64(s) != want {
			t.Errorf("%q: base64Problem says valid %v, the test's oracle %v; want %v", s, got, oracleBase64(s), want)
		}
	}
}

func TestIsJSONType(t *testing.T) {
	for ct, want := range map[string]bool{"": true, "application/json": true, "APPLICATION/JSON": true, "text/json": true, "application/vnd.x+json; v=1": true,
		" application/json ": true, "+json": true, "foo+json": true, "application/cloudevents+json": true,
		"json": false, "application/jsonx": false, "application/xjson": false, "text/plain": false, "application/json-seq": false, ";application/json": false, " ": false} {
		if got := isJSONType(ct); got != want || oracleJSONType(ct) != want {
			t.Errorf("%q: isJSONType %v, the test's oracle %v; want %v", ct, got, oracleJSONType(ct), want)
		}
	}
}

// The test's oracle: SPEC §1.1 written again, differently (regular
// expressions, encoding/json, time.Parse), to check Decode against.
var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]{1,20}$`)
	headerNameRE = regexp.MustCompile(`^[A-Za-z0-9]{1,20}$`)
	timeRE       = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)
	base64RE     = regexp.MustCompile(`^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`)
	uriRE        = regexp.MustCompile(uriReferencePattern())
)

// uriReferencePattern is RFC 3986's URI-reference (§4.1) as a regular
// expression, built from its ABNF.
func uriReferencePattern() string {
	const (
		hex   = `[0-9A-Fa-f]`
		pct   = `%` + hex + hex
		unres = `A-Za-z0-9\-._~`
		sub   = `!$&'()*+,;=`
	)
	pchar := `(?:[` + unres + sub + `:@]|` + pct + `)`
	segment := pchar + `*`
	segNZ := pchar + `+`
	segNZNC := `(?:[` + unres + sub + `@]|` + pct + `)+`
	h16 := hex + `{1,4}`
	dec := `(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])`
	ipv4 := dec + `\.` + dec + `\.` + dec + `\.` + dec
	ls32 := `(?:` + h16 + `:` + h16 + `|` + ipv4 + `)`
	ipv6 := `(?:` + strings.Join([]string{
		`(?:` + h16 + `:){6}` + ls32,
		`::(?:` + h16 + `:){5}` + ls32,
		`(?:` + h16 + `)?::(?:` + h16 + `:){4}` + ls32,
		`(?:(?:` + h16 + `:){0,1}` + h16 + `)?::(?:` + h16 + `:){3}` + ls32,
		`(?:(?:` + h16 + `:){0,2}` + h16 + `)?::(?:` + h16 + `:){2}` + ls32,
		`(?:(?:` + h16 + `:){0,3}` + h16 + `)?::` + h16 + `:` + ls32,
		`(?:(?:` + h16 + `:){0,4}` + h16 + `)?::` + ls32,
		`(?:(?:` + h16 + `:){0,5}` + h16 + `)?::` + h16,
		`(?:(?:` + h16 + `:){0,6}` + h16 + `)?::`,
	}, "|") + `)`
	ipvFuture := `[vV]` + hex + `+\.[` + unres + sub + `:]+`
	host := `(?:\[(?:` + ipv6 + `|` + ipvFuture + `)\]|(?:[` + unres + sub + `]|` + pct + `)*)`
	authority := `(?:(?:[` + unres + sub + `:]|` + pct + `)*@)?` + host + `(?::[0-9]*)?`
	abempty := `(?:/` + segment + `)*`
	absolute := `/(?:` + segNZ + `(?:/` + segment + `)*)?`
	rootless := segNZ + `(?:/` + segment + `)*`
	noscheme := segNZNC + `(?:/` + segment + `)*`
	qf := `(?:` + pchar + `|[/?])*`
	tail := `(?:\?` + qf + `)?(?:#` + qf + `)?`
	uri := `[A-Za-z][A-Za-z0-9+\-.]*:(?://` + authority + abempty + `|` + absolute + `|` + rootless + `|)` + tail
	rel := `(?://` + authority + abempty + `|` + absolute + `|` + noscheme + `|)` + tail
	return `^(?:` + uri + `|` + rel + `)$`
}

// oracleTime reports whether s is an RFC 3339 date-time: the grammar by
// regexp, the calendar by time.Parse (which wants T and Z in upper case and
// knows no leap second).
func oracleTime(s string) bool {
	if !timeRE.MatchString(s) {
		return false
	}
	b := []byte(strings.ToUpper(s))
	if string(b[17:19]) == "60" {
		b[17], b[18] = '5', '9'
	}
	_, err := time.Parse(time.RFC3339Nano, string(b))
	return err == nil
}

// oracleBase64 reports whether s is padded standard base64.
func oracleBase64(s string) bool {
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil && base64RE.MatchString(s)
}

// oracleJSONType reports whether content type ct declares JSON.
func oracleJSONType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.Trim(mt, " \t"))
	return strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "/json")
}

// oracleValue says what is wrong with the string value s of attribute
// name, or "".
func oracleValue(name, s string) string {
	switch name {
	case "specversion":
		if s != "1.0" {
			return "specversion"
		}
	case "id", "type", "datacontenttype":
		if s == "" {
			return name + " empty"
		}
	case "source":
		if !uriRE.MatchString(s) { // "" does match
			return "source not a URI-reference"
		}
		if s == "" {
			return "source empty"
		}
	case "time":
		if !oracleTime(s) {
			return "time"
		}
	}
	return ""
}

var oracleChecked = []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype"}

// oracleRecord says why a record is not a valid event, or "".
func oracleRecord(m kafka.Message) string {
	var ct string
	n := 0
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, "content-type") {
			n++
			if !utf8.Valid(h.Value) {
				return "content-type not UTF-8"
			}
			ct = strings.TrimSpace(string(h.Value))
		}
	}
	if n > 1 {
		return "two content types"
	}
	mt, _, _ := strings.Cut(ct, ";")
	switch mt = strings.ToLower(strings.TrimSpace(mt)); {
	case mt == "application/cloudevents+json":
		return oracleStructured(m.Value)
	case strings.HasPrefix(mt, "application/cloudevents"):
		return "format not supported"
	}
	attrs := map[string]string{}
	for _, h := range m.Headers {
		if len(h.Key) < 3 || !strings.EqualFold(h.Key[:3], "ce_") {
			continue
		}
		if !headerNameRE.MatchString(h.Key[3:]) {
			return "attribute name"
		}
		name := strings.ToLower(h.Key[3:])
		if name == "data" {
			return "ce_data"
		}
		if !utf8.Valid(h.Value) {
			return "header not UTF-8"
		}
		if _, dup := attrs[name]; dup {
			return "two headers for one attribute"
		}
		attrs[name] = string(h.Value)
	}
	if ct != "" {
		attrs["datacontenttype"] = ct
	} else {
		ct = attrs["datacontenttype"]
	}
	for _, name := range oracleChecked {
		if v, ok := attrs[name]; ok {
			if why := oracleValue(name, v); why != "" {
				return why
			}
		} else if slices.Index(oracleChecked, name) < 4 {
			return "missing " + name
		}
	}
	if len(m.Value) > 0 && oracleJSONType(ct) && (!utf8.Valid(m.Value) || !json.Valid(m.Value)) {
		return "data not JSON"
	}
	return ""
}

// oracleStructured says why a structured-mode value is not a valid event,
// or "". Each member is checked where it occurs; the last of a name counts.
func oracleStructured(v []byte) string {
	if !utf8.Valid(v) || !json.Valid(v) {
		return "not JSON"
	}
	d := json.NewDecoder(bytes.NewReader(v))
	if tok, _ := d.Token(); tok != json.Delim('{') {
		return "not an object"
	}
	last := map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return "bad JSON"
		}
		name := tok.(string)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return "bad JSON"
		}
		switch name {
		case "data", "data_base64", "correlationid":
			last[name] = raw
			continue
		}
		if !nameRE.MatchString(name) {
			return "attribute name"
		}
		if !slices.Contains(oracleChecked, name) {
			continue
		}
		if string(raw) == "null" {
			delete(last, name)
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return name + " not a string"
		}
		if why := oracleValue(name, s); why != "" {
			return why
		}
		last[name] = raw
	}
	for _, name := range oracleChecked[:4] {
		if _, ok := last[name]; !ok {
			return "missing " + name
		}
	}
	data, hasData := last["data"]
	b64, hasBase64 := last["data_base64"]
	var ct string
	rawCT, hasCT := last["datacontenttype"]
	if hasCT {
		_ = json.Unmarshal(rawCT, &ct)
	}
	switch {
	case hasData && hasBase64:
		return "data and data_base64"
	case hasBase64:
		var s string
		if string(b64) == "null" || json.Unmarshal(b64, &s) != nil {
			return "data_base64 not a string"
		}
		if !oracleBase64(s) {
			return "data_base64 not base64"
		}
		if hasCT && oracleJSONType(ct) {
			return "data_base64 with a JSON datacontenttype"
		}
	case hasData && hasCT && !oracleJSONType(ct) && data[0] != '"':
		return "data not a string with a non-JSON datacontenttype"
	}
	return ""
}

// checkDecoded checks what Decode promises of an event it returns: the
// JSON is one line, valid, and passes the oracle; decoded again as a
// structured record it gives the same event.
func checkDecoded(t *testing.T, ev *hub.Event) {
	t.Helper()
	checkEventJSON(t, ev)
	if why := oracleStructured(ev.JSON); why != "" {
		t.Fatalf("the oracle refuses the event's JSON (%s): %s", why, ev.JSON)
	}
	again, err := Decode(kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"), Value: ev.JSON, Topic: ev.Topic})
	if err != nil {
		t.Fatalf("the event's JSON does not decode again: %v\n%s", err, ev.JSON)
	}
	if !reflect.DeepEqual(again, ev) {
		t.Fatalf("decoded again:\n%+v\nwant\n%+v", *again, *ev)
	}
}

// checkDecode checks one Decode against the oracle.
func checkDecode(t *testing.T, m kafka.Message) {
	t.Helper()
	why := oracleRecord(m)
	ev, err := Decode(m)
	if err != nil {
		if ev != nil {
			t.Fatal("an event with an error")
		}
		reason := err.Error()
		if !errors.Is(err, ErrInvalidEvent) || !strings.HasPrefix(reason, "consumers: invalid event: ") {
			t.Fatalf("reason %q does not wrap ErrInvalidEvent", reason)
		}
		if strings.ContainsAny(reason, "\r\n") {
			t.Fatalf("reason %q has a line break", reason)
		}
		if why == "" {
			t.Fatalf("Decode refuses what the oracle accepts: %v", err)
		}
		return
	}
	if why != "" {
		t.Fatalf("Decode accepts what the oracle refuses (%s): %s", why, ev.JSON)
	}
	if ev.Topic != m.Topic {
		t.Fatalf("Topic = %q, want %q", ev.Topic, m.Topic)
	}
	checkDecoded(t, ev)
}

// FuzzDecodeBinary feeds Decode records in binary mode (and, through the
// content type, in any other). The headers argument holds one header per
// line as key=value; contentType, when not empty, is one more. The seeds
// hold a good and a bad example of each rule of SPEC §1.1.
func FuzzDecodeBinary(f *testing.F) {
	const required = "ce_specversion=1.0\nce_id=1\nce_source=/s\nce_type=t\n"
	seeds := []struct {
		contentType, headers string
		value                []byte
	}{
		{"application/json", required + "ce_subject=item-1\nce_correlationid=c", []byte(`{"item_id":"item-1","reason":"spam"}`)},
		{"", required, nil},
		{"", required, []byte(` [1, "two", {"three": 3}] `)},
		{"text/plain; charset=utf-8", required, []byte("hello\nworld")},
		{"application/vnd.x+json", required + "ce_ext=a\"b\\c", []byte(`"\u2028"`)},
		{"text/json", required, []byte(`{"a":1}`)},
		{"application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"item_id":"i"}}`)},
		{"APPLICATION/CLOUDEVENTS+JSON; charset=utf-8", "ce_type=x", []byte("{\n\"specversion\" : \"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"subject\":9}\n")},
		{"application/json", required, []byte(`{"item_id":`)},
		{"application/json", "ce_specversion=1.0\nce_id=1\nce_source=/s", []byte(`{}`)},
		{"", required + "CE_ID=2", nil},
		{"", required + "ce_bad-name=x\nce_=y", nil},
		{"", required + "ce_x=\xff", []byte("\xff")},
		// specversion
		{"", "ce_specversion=0.3\nce_id=1\nce_source=/s\nce_type=t", nil},
		{"", "CE_SPECVERSION=1.0\nce_id=1\nce_source=/s\nce_type=t", nil},
		// id, source, type
		{"", "ce_specversion=1.0\nce_id=\nce_source=/s\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=/s\nce_type=", nil},
		// source
		{"", "ce_specversion=1.0\nce_id=1\nce_source=::not a uri ::%zz\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=https://user@example.com:8443/a/b%20c?q=1#f\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=//[2001:db8::7]:80/c=GB?x\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=//[v1.fe80::a+en1]\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=1a:b/c\nce_type=t", nil},
		{"", "ce_specversion=1.0\nce_id=1\nce_source=/a%4\nce_type=t", nil},
		// time
		{"", required + "ce_time=yesterday", nil},
		{"", required + "ce_time=2026-01-02T03:04:05Z", nil},
		{"", required + "ce_time=2024-02-29t23:59:60.123456789-05:30", nil},
		{"", required + "ce_time=2026-02-29T03:04:05+24:00", nil},
		// subject
		{"", required + "ce_subject=item-1", nil},
		{"", required + "ce_subject=\xfe", nil},
		// extension names
		{"", required + "ce_abcdefghij0123456789=x\nCe_Traceparent=y", nil},
		{"", required + "ce_abcdefghij0123456789x=x", nil},
		{"", required + "ce_\u212aey=x", nil},
		{"", required + "ce_data_base64=aGk=", nil},
		{"", required + "ce_data=x", nil},
		// datacontenttype
		{"", required + "ce_datacontenttype=application/octet-stream", []byte{0, 1, 2}},
		{"", required + "ce_datacontenttype=", []byte(`{}`)},
		{"application/json", required + "ce_datacontenttype=text/plain", []byte(`not JSON`)},
		// formats
		{"application/cloudevents+avro", required, []byte{0, 1, 2}},
		{"application/cloudevents-batch+json", "", []byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`)},
		{"application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!!"}`)},
	}
	for _, s := range seeds {
		f.Add(s.contentType, s.headers, s.value)
	}
	f.Fuzz(func(t *testing.T, contentType, headers string, value []byte) {
		m := kafka.Message{Topic: "items.reported", Value: value}
		for line := range strings.SplitSeq(headers, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
			}
		}
		if contentType != "" {
			m.Headers = append(m.Headers, kafka.Header{Key: "content-type", Value: []byte(contentType)})
		}
		checkDecode(t, m)
	})
}

// FuzzDecodeStructured feeds Decode structured-mode values. The seeds hold
// a good and a bad example of each rule of SPEC §1.1.
func FuzzDecodeStructured(f *testing.F) {
	const req = `"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported"`
	for _, v := range []string{
		`{` + req + `}`,
		`{` + req + `,"subject":"item-1","time":"2026-01-02T03:04:05Z","correlationid":"c","datacontenttype":"application/json","data":{"item_id":"item-1"}}`,
		"{\n  \"specversion\": \"1.0\",\n  \"type\": \"t\",\n  \"id\": \"e9\",\n  \"source\": \"/items\",\n  \"extra\": [1, {\"k\": null}]\n}\n",
		`{"spec\u0076ersion":"1.0","id":"a\"b","source":"/s","type":"t","subject":"","subject":"","type":"t2","data":{"s":"}{\"item_id\":1","n":[{"item_id":"x"}],"item_id":"i"}}`,
		`{` + req + `,"data":1,"data_base64":"aGk="}`,
		`not json`, `[]`, ``, `{}`, "{\"id\":\"\xfe\"}",
		// specversion
		`{"specversion":"0.3","id":"1","source":"/s","type":"t"}`,
		`{"specversion":1.0,"id":"1","source":"/s","type":"t"}`,
		`{"specversion":null,"id":"1","source":"/s","type":"t"}`,
		// id, source, type
		`{"specversion":"1.0","id":"","source":"/s","type":"t"}`,
		`{"specversion":"1.0","id":7,"source":"/s","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"/s","type":{"x":1}}`,
		`{"specversion":"1.0","id":"1","source":"/s"}`,
		// source
		`{"specversion":"1.0","id":"1","source":"::not a uri ::%zz","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"https://user@example.com:8443/a/b%20c?q=1#f","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"mailto:cncf-wg-serverless@lists.cncf.io","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"//[::ffff:192.0.2.1]/x","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"/caf\u00e9","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"//h:8x","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"\u002fs","type":"t"}`,
		// time
		`{` + req + `,"time":"yesterday"}`,
		`{` + req + `,"time":"2026-01-02T03:04:05.123+01:00"}`,
		`{` + req + `,"time":"2024-02-29t23:59:60z"}`,
		`{` + req + `,"time":"2026-02-29T03:04:05Z"}`,
		`{` + req + `,"time":5}`,
		`{` + req + `,"time":null}`,
		// subject
		`{` + req + `,"subject":5}`,
		`{` + req + `,"subject":null,"data":{"item_id":"i"}}`,
		// extension names
		`{` + req + `,"Foo":"x"}`,
		`{` + req + `,"abcdefghij0123456789":1,"ext":{"a":[1]}}`,
		`{` + req + `,"abcdefghij0123456789x":1}`,
		`{` + req + `,"foo_bar":1}`,
		`{` + req + `,"":1}`,
		// data_base64
		`{` + req + `,"data_base64":"!!!"}`,
		`{` + req + `,"datacontenttype":"application/octet-stream","data_base64":"AAEC"}`,
		`{` + req + `,"data_base64":"aGk"}`,
		`{` + req + `,"data_base64":null}`,
		`{` + req + `,"data_base64":"aG\u0073="}`,
		// datacontenttype
		`{` + req + `,"datacontenttype":"application/json","data_base64":"aGk="}`,
		`{` + req + `,"datacontenttype":"text/plain","data":{"a":1}}`,
		`{` + req + `,"datacontenttype":"text/plain","data":"hello"}`,
		`{` + req + `,"datacontenttype":"application/vnd.x+json; v=1","data":null}`,
		`{` + req + `,"datacontenttype":"","data":{}}`,
		`{` + req + `,"datacontenttype":7}`,
	} {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		checkDecode(t, kafka.Message{Topic: "takedown.events", Headers: hdrs("content-type", "application/cloudevents+json"), Value: value})
	})
}

// FuzzAttributeChecks compares the checks behind Decode with the test's
// oracle, on strings and on bytes.
func FuzzAttributeChecks(f *testing.F) {
	for _, s := range validURIs {
		f.Add(s)
	}
	for _, s := range invalidURIs {
		f.Add(s)
	}
	for _, s := range []string{"2026-01-02T03:04:05Z", "2024-02-29t23:59:60.5-05:30", "2026-02-29T00:00:00+24:00", "aGk=", "!!!", "YQ==",
		"application/json", "text/plain", "application/vnd.x+json; v=1", "abcdefghij0123456789", "Foo"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		at, why := uriProblem(s)
		if atB, whyB := uriProblem(b); atB != at || whyB != why {
			t.Fatalf("%q: uriProblem gives %d %q on a string, %d %q on bytes", s, at, why, atB, whyB)
		}
		if ok := at < 0; ok != uriRE.MatchString(s) {
			t.Fatalf("%q: uriProblem = %d %q; the regexp says valid %v", s, at, why, !ok)
		}
		if at >= len(s) || (at < 0) != (why == "") {
			t.Fatalf("%q: uriProblem = %d %q", s, at, why)
		}
		if at < 0 && !strings.Contains(s, "%") && !strings.Contains(s, "[v") && !strings.Contains(s, "[V") {
			// url.Parse refuses percent-escapes in a host and IPvFuture.
			if _, err := url.Parse(s); err != nil {
				t.Fatalf("%q: valid, but url.Parse: %v", s, err)
			}
		}
		if got := isRFC3339(s); got != isRFC3339(b) || got != oracleTime(s) {
			t.Fatalf("%q: isRFC3339 %v, on bytes %v, the oracle %v", s, got, isRFC3339(b), oracleTime(s))
		}
		if got := base64Problem(b) < 0; got != oracleBase64(s) {
			t.Fatalf("%q: base64Problem says valid %v, the oracle %v", s, got, oracleBase64(s))
		}
		if got := isJSONType(s); got != isJSONType(b) || got != oracleJSONType(s) {
			t.Fatalf("%q: isJSONType %v, on bytes %v, the oracle %v", s, got, isJSONType(b), oracleJSONType(s))
		}
		if got := validName(s); got != validName(b) || got != nameRE.MatchString(s) {
			t.Fatalf("%q: validName %v, on bytes %v, the oracle %v", s, got, validName(b), nameRE.MatchString(s))
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name string
		msg  kafka.Message
	}{
		{"binary", kafka.Message{
			Headers: binaryHeaders("ce_subject", "item-42", "ce_time", "2026-01-02T03:04:05Z", "ce_correlationid", "0b6a2c1e-5d1f-4bd5-9d7c-2f1c7d7c8e11",
				"content-type", "application/json"),
			Value: []byte(`{"item_id":"item-42","reporter_id":"user-1234","reason":"counterfeit","reported_at":"2026-01-02T03:04:05Z"}`),
		}},
		{"structured", kafka.Message{
			Headers: hdrs("content-type", "application/cloudevents+json"),
			Value: []byte(`{"specversion":"1.0","id":"e1","source":"/platform","type":"item.reported","subject":"item-42","time":"2026-01-02T03:04:05Z",` +
				`"correlationid":"0b6a2c1e-5d1f-4bd5-9d7c-2f1c7d7c8e11","datacontenttype":"application/json",` +
				`"data":{"item_id":"item-42","reporter_id":"user-1234","reason":"counterfeit","reported_at":"2026-01-02T03:04:05Z"}}`),
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.msg.Value)))
			for b.Loop() {
				if _, err := Decode(c.msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// jsonDataItemID is what the item service did before DataItemID: decode
// the whole event for data.item_id. The oracle of TestDataItemID, and the
// "before" of BenchmarkDataItemID.
func jsonDataItemID(event []byte) string {
	var ev struct {
		Data struct {
			ItemID string `json:"item_id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(event, &ev)
	return ev.Data.ItemID
}

func TestDataItemID(t *testing.T) {
	structured := func(data string) kafka.Message {
		return kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"),
			Value: []byte(`{ "specversion": "1.0", "id": "e1", "source": "/platform", "type": "takedown.requested", "subject": "item-9",` + "\n" + ` "data": ` + data + ` }`)}
	}
	binary := func(data string) kafka.Message {
		return kafka.Message{Headers: binaryHeaders("ce_subject", "item-9", "content-type", "application/json"), Value: []byte(data)}
	}
	tests := []struct {
		name string
		msg  kafka.Message
		want string
	}{
		{"binary", binary(`{"item_id":"item-1","reason":"spam"}`), "item-1"},
		{"structured, spaces", structured(`{ "reason": "spam", "item_id" : "item-2" }`), "item-2"},
		{"escaped key and value", binary(`{"item\u005fid":"item-\u0033"}`), "item-3"},
		{"the last of two", binary(`{"item_id":"item-4","item_id":"item-5"}`), "item-5"},
		{"nested only", binary(`{"item":{"item_id":"item-6"}}`), ""},
		{"not a string", binary(`{"item_id":7}`), ""},
		{"null", binary(`{"item_id":null}`), ""},
		{"data an array", binary(`[{"item_id":"item-8"}]`), ""},
		{"data a string", structured(`"item-8"`), ""},
		{"no data", kafka.Message{Headers: binaryHeaders("ce_subject", "item-9")}, ""},
		{"an attribute named like it", kafka.Message{Headers: binaryHeaders("ce_itemid", "item-10")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := DataItemID(ev); got != tt.want {
				t.Errorf("DataItemID = %q, want %q (JSON %s)", got, tt.want, ev.JSON)
			}
			if oracle := jsonDataItemID(ev.JSON); oracle != tt.want {
				t.Errorf("encoding/json reads %q, want %q (JSON %s)", oracle, tt.want, ev.JSON)
			}
		})
	}
}

// BenchmarkDataItemID: data.item_id of a decoded takedown command, by
// DataItemID and by decoding the whole event as the item service did.
func BenchmarkDataItemID(b *testing.B) {
	ev, err := Decode(kafka.Message{
		Headers: binaryHeaders("ce_subject", "item-42", "ce_time", "2026-01-02T03:04:05Z", "ce_correlationid", "0b6a2c1e-5d1f-4bd5-9d7c-2f1c7d7c8e11",
			"content-type", "application/json"),
		Value: []byte(`{"item_id":"item-42","reason":"counterfeit","requested_by":"police-1","authority_ref":"REF-2026-1"}`),
	})
	if err != nil {
		b.Fatal(err)
	}
	for name, f := range map[string]func() string{
		"scan":           func() string { return DataItemID(ev) },
		"json.Unmarshal": func() string { return jsonDataItemID(ev.JSON) },
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if f() != "item-42" {
					b.Fatal("wrong item ID")
				}
			}
		})
	}
}
