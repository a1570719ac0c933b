package node

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
)

func TestMain(m *testing.M) {
	v, err := newOpenAPIValidator()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.DefaultClient.Transport = v
	code := m.Run()
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "openapi: %d responses checked against docs/openapi.yaml\n", v.validated.Load())
	}
	if code == 0 {
		code = v.report()
	}
	if code == 0 && os.Getenv("SWITCHBOARD_LOADCLIENT") == "" && os.Getenv(childNodeEnv) == "" && v.validated.Load() == 0 && wholeSuite() {
		fmt.Fprintln(os.Stderr, "no response was checked against docs/openapi.yaml")
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// wholeSuite reports whether every test runs (no -run): only then must
// some response have been checked against the OpenAPI document.
func wholeSuite() bool {
	f := flag.Lookup("test.run")
	return f == nil || f.Value.String() == ""
}

const waitFor = 15 * time.Second

// Test principals: one per role, two partners.
const (
	modToken    = "mod-token-0123456789"
	acmeToken   = "acme-token-0123456789"
	globexToken = "globex-token-0123456789"
	policeToken = "police-token-0123456789"
)

var testPrincipals = []config.Principal{
	{Name: "mod", Role: "moderator", TokenSHA256: auth.HashToken(modToken)},
	{Name: "acme", Role: "partner", TokenSHA256: auth.HashToken(acmeToken), Channels: []string{"item:*"}},
	{Name: "globex", Role: "partner", Token: globexToken},
	{Name: "police", Role: "police", TokenSHA256: auth.HashToken(policeToken)},
}

func binaryMsg(topic, id, typ, item, corr string, data any) kafka.Message {
	b, _ := json.Marshal(data)
	hs := []kafka.Header{
		{Key: "ce_specversion", Value: []byte("1.0")},
		{Key: "ce_id", Value: []byte(id)},
		{Key: "ce_source", Value: []byte("/test")},
		{Key: "ce_type", Value: []byte(typ)},
		{Key: "ce_subject", Value: []byte(item)},
		{Key: "content-type", Value: []byte("application/json")},
	}
	if corr != "" {
		hs = append(hs, kafka.Header{Key: "ce_correlationid", Value: []byte(corr)})
	}
	return kafka.Message{Topic: topic, Key: []byte(item), Value: b, Headers: hs}
}

func structuredMsg(topic, id, typ, item, corr string, data any) kafka.Message {
	ev := map[string]any{"specversion": "1.0", "id": id, "source": "/test", "type": typ, "subject": item, "data": data}
	if corr != "" {
		ev["correlationid"] = corr
	}
	b, _ := json.MarshalIndent(ev, "", "  ") // newlines must not reach SSE
	return kafka.Message{Topic: topic, Key: []byte(item), Value: b,
		Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json; charset=utf-8")}}}
}

func produce(t *testing.T, addr string, msgs ...kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, Transport: tr}
	defer w.Close()
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func wsFrame(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wsSubscribe(t *testing.T, a *Node, channel string) *websocket.Conn {
	t.Helper()
	c := dialWS(t, a)
	c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"1","channel":"`+channel+`"}`))
	if f := wsFrame(t, c); f["type"] != "ack" {
		t.Fatalf("want ack, got %v", f)
	}
	return c
}

// TestKafkaToSubscribers: events written by a real kafka-go producer, in both
// CloudEvents modes, reach exactly the SSE and WebSocket subscribers of the
// channels they route to, in per-item order.
func TestKafkaToSubscribers(t *testing.T) {
	a := startTestApp(t, nil)
	reportsSSE := openSSE(t, a.base()+"/v1/sse?channel=reports")
	itemSSE := openSSE(t, a.base()+"/v1/sse?channel=item:item-7")
	corrWS := wsSubscribe(t, a, "corr:c-42")
	itemWS := wsSubscribe(t, a, "item:item-7")
	// Let the consumer group settle before producing.
	waitReady(t, a)

	var msgs []kafka.Message
	for i := 0; i < 10; i++ {
		item := fmt.Sprintf("item-%d", 7+i%2) // item-7 and item-8 alternate
		data := map[string]any{"item_id": item, "reporter_id": "u1", "reason": "spam", "n": i}
		if i%2 == 0 {
			msgs = append(msgs, binaryMsg("items.reported", fmt.Sprint("r", i), "item.reported", item, "", data))
		} else {
			msgs = append(msgs, structuredMsg("items.reported", fmt.Sprint("r", i), "item.reported", item, "", data))
		}
	}
	produce(t, a.kafkaAddr, msgs...)

	// reports: all ten reports, each item's in order.
	last := map[string]int{}
	for range 10 {
		ev := reportsSSE.next(t)
		if ev["event"] != "item.reported" || ev["id"] == "" || strings.Contains(ev["data"], "\n") {
			t.Fatalf("bad SSE event %v", ev)
		}
		var ce struct {
			Subject string
			Data    struct{ N int }
		}
		json.Unmarshal([]byte(ev["data"]), &ce)
		if ce.Data.N < last[ce.Subject] {
			t.Fatalf("%s out of order", ce.Subject)
		}
		last[ce.Subject] = ce.Data.N
	}
	// item:item-7: its five reports in order, then the confirmation.
	for i := 0; i < 10; i += 2 {
		var ce struct{ Data struct{ N int } }
		json.Unmarshal([]byte(itemSSE.next(t)["data"]), &ce)
		if ce.Data.N != i {
			t.Fatalf("item-7 SSE got %d, want %d", ce.Data.N, i)
		}
		f := wsFrame(t, itemWS)
		if f["channel"] != "item:item-7" || int(f["event"].(map[string]any)["data"].(map[string]any)["n"].(float64)) != i {
			t.Fatalf("item-7 WS got %v", f)
		}
	}
	// Topics are not ordered with each other: the confirmation comes after.
	produce(t, a.kafkaAddr, binaryMsg("takedown.events", "t1", "takedown.confirmed", "item-7", "c-42", map[string]any{"item_id": "item-7"}))
	if ev := itemSSE.next(t); ev["event"] != "takedown.confirmed" {
		t.Fatalf("want the confirmation, got %v", ev)
	}
	// corr:c-42: only the confirmation.
	f := wsFrame(t, corrWS)
	if f["type"] != "event" || f["channel"] != "corr:c-42" || f["event"].(map[string]any)["type"] != "takedown.confirmed" {
		t.Fatalf("corr channel got %v", f)
	}
}

// TestKcat: a record produced by kcat, a Kafka client nobody here wrote,
// arrives on SSE; and kcat lists the embedded broker's topics.
func TestKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatal("kcat is required in CI: apt-get install kcat")
		}
		t.Skip("kcat not installed")
	}
	a := startTestApp(t, nil)
	out, err := exec.CommandContext(t.Context(), kcat, "-b", a.kafkaAddr, "-L").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -L: %v\n%s", err, out)
	}
	for _, topic := range []string{"items.reported", "takedown.commands", "takedown.events", "switchboard.dlq"} {
		if !bytes.Contains(out, []byte(`topic "`+topic+`"`)) {
			t.Fatalf("kcat -L does not list %s:\n%s", topic, out)
		}
	}
	s := openSSE(t, a.base()+"/v1/sse?channel=item:item-99")
	waitReady(t, a)
	cmd := exec.CommandContext(t.Context(), kcat, "-b", a.kafkaAddr, "-P", "-t", "items.reported", "-k", "item-99",
		"-H", "ce_specversion=1.0", "-H", "ce_id=kcat-1", "-H", "ce_source=/kcat", "-H", "ce_type=item.reported",
		"-H", "ce_subject=item-99", "-H", "content-type=application/json")
	cmd.Stdin = strings.NewReader(`{"item_id":"item-99","reporter_id":"k","reason":"spam"}` + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	ev := s.next(t)
	if ev["event"] != "item.reported" || !strings.Contains(ev["data"], `"id":"kcat-1"`) {
		t.Fatalf("got %v", ev)
	}
}

// TestDeadLetter: a malformed record goes, unchanged, to the dead-letter topic
// with both headers, and the next valid record on the same partition is still
// delivered.
func TestDeadLetter(t *testing.T) {
	a := startTestApp(t, nil)
	s := openSSE(t, a.base()+"/v1/sse?channel=item:item-5")
	waitReady(t, a)
	bad := []kafka.Message{
		{Topic: "items.reported", Key: []byte("item-5"), Value: []byte("{not json"), Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}},
		structuredMsg("items.reported", "x1", "", "item-5", "", nil),
		binaryMsg("items.reported", "x2", "item.reported", "item-5", "", map[string]any{}),
	}
	bad[2].Headers[0].Value = []byte("0.3")
	good := binaryMsg("items.reported", "ok-1", "item.reported", "item-5", "", map[string]any{"item_id": "item-5"})
	produce(t, a.kafkaAddr, append(bad, good)...)
	if ev := s.next(t); !strings.Contains(ev["data"], `"id":"ok-1"`) {
		t.Fatalf("got %v, want the valid record", ev)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.kafkaAddr}, Topic: "switchboard.dlq", Partition: partitionOf(t, a, "item-5"), MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for i, want := range bad {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Value, want.Value) {
			t.Fatalf("dead letter %d value %q, want %q", i, m.Value, want.Value)
		}
		hs := map[string]string{}
		for _, h := range m.Headers {
			hs[h.Key] = string(h.Value)
		}
		if hs["switchboard-error"] == "" || !strings.HasPrefix(hs["switchboard-source"], "items.reported/") {
			t.Fatalf("dead letter %d headers %v", i, hs)
		}
	}
}

// partitionOf finds the partition the Hash balancer puts key on, by producing
// nothing: it reads where the good record landed in items.reported.
func partitionOf(t *testing.T, a *Node, key string) int {
	t.Helper()
	conn, err := kafka.Dial("tcp", a.kafkaAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions("items.reported")
	if err != nil {
		t.Fatal(err)
	}
	var h kafka.Hash
	msg := kafka.Message{Key: []byte(key)}
	ids := make([]int, len(parts))
	for i := range parts {
		ids[i] = i
	}
	return h.Balance(msg, ids...)
}

// TestShutdown: WebSockets get 1001, SSE streams end, and (TestMain) no
// goroutine is left.
func TestShutdown(t *testing.T) {
	a := startTestApp(t, nil)
	ws := wsSubscribe(t, a, "reports")
	s := openSSE(t, a.base()+"/v1/sse?channel=reports")
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Shutdown(ctx) }()
	_, _, err := ws.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("close %d (%v), want 1001", got, err)
	}
	for range s.events {
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestHealth(t *testing.T) {
	a := startTestApp(t, nil)
	resp, _, err := call(t.Context(), nil, http.MethodGet, a.base()+"/healthz", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	waitReady(t, a)
}

// TestResumeThroughKafka: an SSE client drops, events keep coming through
// Kafka, and its Last-Event-ID brings back exactly the missed ones, in order.
func TestResumeThroughKafka(t *testing.T) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	url := a.base() + "/v1/sse?channel=item:item-3&channel=reports"
	report := func(n int) kafka.Message {
		return binaryMsg("items.reported", fmt.Sprint("res-", n), "item.reported", "item-3", "", map[string]any{"n": n})
	}
	s := openSSE(t, url)
	produce(t, a.kafkaAddr, report(1), report(2))
	var lastID string
	for want := 1; want <= 2; want++ {
		ev := s.next(t)
		if !strings.Contains(ev["data"], fmt.Sprintf(`"n":%d`, want)) {
			t.Fatalf("got %v, want n=%d", ev, want)
		}
		lastID = ev["id"]
	}
	s.body.Close()
	produce(t, a.kafkaAddr, report(3), report(4), report(5))
	// Wait until the hub holds them, then resume.
	probe := openSSE(t, a.base()+"/v1/sse?channel=item:item-3&last_event_id="+url2cursor(t, lastID))
	for range 3 {
		probe.next(t)
	}
	resumed := openSSEWith(t, t, nil, url, headers(modToken, "Last-Event-ID", lastID))
	var got []string
	for range 3 {
		got = append(got, resumed.next(t)["data"])
	}
	for i, d := range got {
		if !strings.Contains(d, fmt.Sprintf(`"n":%d`, 3+i)) {
			t.Fatalf("resumed event %d is %s, want n=%d", i, d, 3+i)
		}
	}
}

// url2cursor keeps only item:item-3's part of a stream id: a stream over
// fewer channels resumes those it names.
func url2cursor(t *testing.T, id string) string {
	t.Helper()
	c, err := hub.ParseStreamCursor(id)
	if err != nil {
		t.Fatal(err)
	}
	return hub.StreamCursor{"item:item-3": c["item:item-3"]}.Encode()
}
