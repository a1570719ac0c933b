package consumers

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

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
			name: "structured non-string subject and correlationid are not routed on",
			msg: kafka.Message{
				Headers: hdrs("content-type", "application/cloudevents+json"),
				Value:   []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","subject":5,"correlationid":{"x":1},"data":{"item_id":"item-3"}}`),
			},
			want: hub.Event{ID: "a", Source: "/s", Type: "t", Subject: "item-3",
				JSON: []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","subject":5,"correlationid":{"x":1},"data":{"item_id":"item-3"}}`)},
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

// FuzzDecode feeds Decode arbitrary records. The headers argument holds one
// header per line as key=value; contentType, when not empty, is one more.
func FuzzDecode(f *testing.F) {
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
		{"application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"item_id":"i"}}`)},
		{"APPLICATION/CLOUDEVENTS+JSON; charset=utf-8", "ce_type=x", []byte("{\n\"specversion\" : \"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"subject\":9}\n")},
		{"application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"x"}`)},
		{"application/cloudevents+json", "", []byte(`{"spec\u0076ersion":"1.0","id":"a\"b","source":"/s","type":"t","subject":"","data":{"s":"}{\"item_id\":1","n":[{"item_id":"x"}],"item_id":"i"}}`)},
		{"application/cloudevents+json", "", []byte(`{"specversion":"0.3"}`)},
		{"application/cloudevents+json", "", []byte(`not json`)},
		{"application/cloudevents+json", "", []byte(`[]`)},
		{"application/json", required, []byte(`{"item_id":`)},
		{"application/json", "ce_specversion=1.0\nce_id=1\nce_source=/s", []byte(`{}`)},
		{"", "ce_specversion=0.3\nce_id=1\nce_source=/s\nce_type=t", nil},
		{"", required + "CE_ID=2", nil},
		{"", required + "ce_bad-name=x\nce_=y", nil},
		{"", required + "ce_x=\xff", []byte("\xff")},
	}
	for _, s := range seeds {
		f.Add(s.contentType, s.headers, s.value)
	}
	f.Fuzz(func(t *testing.T, contentType, headers string, value []byte) {
		var m kafka.Message
		for line := range strings.SplitSeq(headers, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
			}
		}
		if contentType != "" {
			m.Headers = append(m.Headers, kafka.Header{Key: "content-type", Value: []byte(contentType)})
		}
		m.Value = value
		ev, err := Decode(m)
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error %q does not wrap ErrInvalidEvent", err)
			}
			if ev != nil {
				t.Fatal("an event with an error")
			}
			return
		}
		checkEventJSON(t, ev)
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
