package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// postCommand sends POST /v1/<name> and decodes the JSON answer.
func postCommand(t *testing.T, a *Node, name, token, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	resp, b, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/"+name, jsonHeader(token, hdr...), body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp, m
}

// restoresOf counts the item.restore records of corr on item.commands.
func restoresOf(t *testing.T, a *Node, corr string) int {
	t.Helper()
	return countRecords(t, a, producers.DemoItemCommandsTopic, func(ev *hub.Event) bool {
		return ev.CorrelationID == corr && ev.Type == producers.TypeItemRestore
	})
}

// TestCommandRestoresHTTP: the demo restores command, declared beside the
// built-in takedown, end to end through the embedded broker and the item
// service: 200, 404, 202 then GET, strict bodies, roles, and an
// Idempotency-Key retry that publishes once.
func TestCommandRestoresHTTP(t *testing.T) {
	a := startTestNode(t, nodeSpec{
		config: func(c *config.Config) {
			c.ItemSvc.Latency = 10 * time.Millisecond
			c.Limits.TakedownBurst = 1000
		},
		opts: []Option{withCommands(demoRestores())},
	})
	waitReady(t, a)

	t.Run("restored 200, retried once", func(t *testing.T) {
		resp, m := postCommand(t, a, "restores", policeToken, `{"item_id":"item-1","reason":"appeal granted"}`, "Idempotency-Key", "r-1")
		corr, _ := m["correlation_id"].(string)
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != "item-1" || corr == "" || len(strs(m["restored_to"])) != len(containersOf(t, "item-1")) {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
		resp, m = postCommand(t, a, "restores", policeToken, `{"item_id":"item-1","reason":"appeal granted"}`, "Idempotency-Key", "r-1")
		if resp.StatusCode != 200 || m["correlation_id"] != corr {
			t.Fatalf("retry: %d %v", resp.StatusCode, m)
		}
		if n := restoresOf(t, a, corr); n != 1 {
			t.Fatalf("%d restore commands on the topic, want 1", n)
		}
		// The key is scoped per command: the same key for a takedown is
		// another request, not a reuse.
		if resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"again"}`, "Idempotency-Key", "r-1"); resp.StatusCode != 200 || m["correlation_id"] == corr {
			t.Fatalf("takedown with the same key: %d %v", resp.StatusCode, m)
		}
		// A restore is not a takedown: GET /v1/takedowns/{id} does not
		// know it.
		if resp, _ := get(t, a, policeToken, "/v1/takedowns/"+corr); resp.StatusCode != 404 {
			t.Fatalf("GET /v1/takedowns of a restore: %d", resp.StatusCode)
		}
		if resp, m := get(t, a, policeToken, "/v1/restores/"+corr); resp.StatusCode != 200 || m["status"] != "confirmed" || m["command"] != "restores" || m["code"] != float64(200) {
			t.Fatalf("GET /v1/restores: %d %v", resp.StatusCode, m)
		}
	})
	t.Run("unknown item 404", func(t *testing.T) {
		resp, m := postCommand(t, a, "restores", policeToken, `{"item_id":"no-such-item"}`)
		if resp.StatusCode != 404 || !isProblem(resp) || m["correlation_id"] == nil || m["reason"] != "not_found" || m["type"] != "urn:switchboard:problem:command-rejected" {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
	})
	t.Run("respond-async 202 then GET", func(t *testing.T) {
		resp, m := postCommand(t, a, "restores", modToken, `{"item_id":"item-2"}`, "Prefer", "respond-async")
		corr, _ := m["correlation_id"].(string)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != 202 || loc != "/v1/restores/"+corr || m["status_url"] != loc || resp.Header.Get("Preference-Applied") != "respond-async" || m["status"] != "pending" {
			t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
		}
		resp, m = get(t, a, modToken, loc, "Prefer", "wait=10")
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != "item-2" {
			t.Fatalf("GET %d %v", resp.StatusCode, m)
		}
		if resp, _ := get(t, a, policeToken, loc); resp.StatusCode != 404 {
			t.Fatalf("police read a moderator's restore: %d", resp.StatusCode)
		}
	})
	refusals := []struct {
		name, token, body, want string
		status                  int
	}{
		{"unknown member", policeToken, `{"item_id":"item-3","priority":"high"}`, `unknown member \"priority\"`, 400},
		{"member twice", policeToken, `{"item_id":"item-3","item_id":"item-4"}`, `member \"item_id\" appears more than once`, 400},
		{"not a string", policeToken, `{"item_id":3}`, `\"item_id\"`, 400},
		{"missing key", policeToken, `{"reason":"x"}`, `\"item_id\" is required`, 400},
		{"bad key", policeToken, `{"item_id":"a b"}`, `\"item_id\" must be`, 400},
		{"not an object", policeToken, `[]`, `object`, 400},
		{"no token", "", `{"item_id":"item-3"}`, "", 401},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			resp, b, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/restores", jsonHeader(tt.token), tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || !isProblem(resp) || !strings.Contains(string(b), tt.want) {
				t.Fatalf("%d %s, want %d naming %s", resp.StatusCode, b, tt.status, tt.want)
			}
		})
	}
}

// TestCommandTimeoutThenRetry: with the item service stopped a restore
// times out with 504 and Location /v1/restores/{id}; once it is back, the
// same request with the same Idempotency-Key returns 200, and the topic
// holds one command.
func TestCommandTimeoutThenRetry(t *testing.T) {
	r := demoRestores()
	r.Timeout = 300 * time.Millisecond
	a := startTestNode(t, nodeSpec{
		config: func(c *config.Config) { c.ItemSvc.Enabled = false },
		opts:   []Option{withCommands(r)},
	})
	waitReady(t, a)
	body := `{"item_id":"item-7"}`
	resp, m := postCommand(t, a, "restores", policeToken, body, "Idempotency-Key", "k-1")
	corr, _ := m["correlation_id"].(string)
	if resp.StatusCode != 504 || !isProblem(resp) || corr == "" || resp.Header.Get("Location") != "/v1/restores/"+corr || m["status_url"] != "/v1/restores/"+corr {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}
	if resp, _ := postCommand(t, a, "restores", policeToken, `{"item_id":"item-8"}`, "Idempotency-Key", "k-1"); resp.StatusCode != 422 {
		t.Fatalf("same key, other body: %d", resp.StatusCode)
	}
	runItemService(t, a, a.kafkaAddr)
	resp, m = postCommand(t, a, "restores", policeToken, body, "Idempotency-Key", "k-1", "Prefer", "wait=10")
	if resp.StatusCode != 200 || m["correlation_id"] != corr || m["status"] != "confirmed" {
		t.Fatalf("retry: %d %v", resp.StatusCode, m)
	}
	if n := restoresOf(t, a, corr); n != 1 {
		t.Fatalf("%d commands for the key, want 1", n)
	}
}

// TestCommandWebSocketCall: the call frame for the restores command and
// for the built-in takedown: ack, the corr: events, one result; a retry of
// the same idempotency_key joins the first call and publishes nothing.
func TestCommandWebSocketCall(t *testing.T) {
	a := startTestNode(t, nodeSpec{opts: []Option{withCommands(demoRestores())}})
	waitReady(t, a)
	c := dialWSWith(t, t, a.wsURL(""), bearer(acmeToken))
	defer c.CloseNow()
	send := func(frame string) {
		t.Helper()
		if err := c.Write(t.Context(), websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	// result reads frames up to the result of id, checking that every
	// event before it is on corr:.
	result := func(id string) (corr string, res map[string]any, events []string) {
		t.Helper()
		ack := wsFrame(t, c)
		corr, _ = ack["correlation_id"].(string)
		if ack["type"] != "ack" || ack["id"] != id || corr == "" {
			t.Fatalf("ack %v", ack)
		}
		for {
			f := wsFrame(t, c)
			if f["type"] == "result" {
				if f["id"] != id || f["correlation_id"] != corr {
					t.Fatalf("result %v", f)
				}
				return corr, f, events
			}
			if f["type"] != "event" || f["channel"] != "corr:"+corr {
				t.Fatalf("frame %v", f)
			}
			events = append(events, f["event"].(map[string]any)["type"].(string))
		}
	}

	frame := `{"type":"call","id":"7","command":"restores","data":{"item_id":"item-5","reason":"appeal"},"idempotency_key":"w-1"}`
	send(frame)
	corr, res, events := result("7")
	ev, _ := res["event"].(map[string]any)
	if res["command"] != "restores" || res["status"] != "confirmed" || res["code"] != float64(200) || ev["type"] != producers.TypeItemRestored {
		t.Fatalf("result %v", res)
	}
	if len(events) == 0 || events[len(events)-1] != producers.TypeItemRestored {
		t.Fatalf("corr: events %v, want the command and item.restored", events)
	}
	send(strings.Replace(frame, `"id":"7"`, `"id":"8"`, 1))
	again, res, _ := result("8")
	if again != corr || res["status"] != "confirmed" {
		t.Fatalf("retry: %s %v, want %s confirmed", again, res, corr)
	}
	if n := restoresOf(t, a, corr); n != 1 {
		t.Fatalf("%d restore commands on the topic, want 1", n)
	}

	// The built-in takedown through the call frame.
	send(`{"type":"call","id":"9","command":"takedowns","data":{"item_id":"item-6","reason":"counterfeit"}}`)
	_, res, events = result("9")
	if res["command"] != "takedowns" || res["status"] != "confirmed" || res["code"] != float64(200) || !strings.Contains(strings.Join(events, " "), "item.removed") {
		t.Fatalf("takedown call: %v %v", res, events)
	}
	send(`{"type":"call","id":"10","command":"takedowns","data":{"item_id":"no-such-item","reason":"x"}}`)
	if _, res, _ = result("10"); res["status"] != "rejected" || res["code"] != float64(404) {
		t.Fatalf("takedown call of an unknown item: %v", res)
	}

	// Refused frames; the connection stays open.
	for _, tt := range []struct{ frame, code, want string }{
		{`{"type":"call","id":"e1","command":"nope","data":{}}`, hub.CodeNotFound, `"nope"`},
		{`{"type":"call","id":"e2","command":"restores","data":{"item_id":"item-1","extra":"x"}}`, hub.CodeBadRequest, `"extra"`},
		{`{"type":"call","id":"e3","command":"restores"}`, hub.CodeBadRequest, `"data"`},
		{`{"type":"call","id":"e4","command":"restores","data":{"item_id":"item-1"},"more":1}`, hub.CodeBadRequest, `"more"`},
	} {
		send(tt.frame)
		f := wsFrame(t, c)
		if f["type"] != "error" || f["code"] != tt.code || !strings.Contains(f["message"].(string), tt.want) {
			t.Fatalf("%s: %v, want %s naming %s", tt.frame, f, tt.code, tt.want)
		}
	}
	// Police call over HTTP only; a command declared for moderators only
	// refuses a partner.
	send(`{"type":"ping","id":"p"}`)
	if f := wsFrame(t, c); f["type"] != "pong" {
		t.Fatalf("%v", f)
	}
}

// TestCommandRoles: a command declared for moderators refuses police over
// HTTP and partners over WebSocket.
func TestCommandRoles(t *testing.T) {
	r := demoRestores()
	r.Roles = []string{config.RoleModerator}
	a := startTestNode(t, nodeSpec{opts: []Option{withCommands(r)}})
	waitReady(t, a)
	if resp, _ := postCommand(t, a, "restores", policeToken, `{"item_id":"item-1"}`); resp.StatusCode != 403 || !isProblem(resp) {
		t.Fatalf("police: %d", resp.StatusCode)
	}
	c := dialWSWith(t, t, a.wsURL(""), bearer(acmeToken))
	defer c.CloseNow()
	c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"call","id":"1","command":"restores","data":{"item_id":"item-1"}}`))
	if f := wsFrame(t, c); f["type"] != "error" || f["code"] != hub.CodeForbidden {
		t.Fatalf("partner: %v", f)
	}
	if resp, m := postCommand(t, a, "restores", modToken, `{"item_id":"item-1"}`); resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("moderator: %d %v", resp.StatusCode, m)
	}
}

// TestCommandUntrustedOutcomes: outcomes of the restores command from
// another topic, another source, for a correlation ID this deployment did
// not publish, or about another item, are fanned out but change nothing
// and are counted; the trusted one answers.
func TestCommandUntrustedOutcomes(t *testing.T) {
	a := startTestNode(t, nodeSpec{
		config: func(c *config.Config) { c.ItemSvc.Enabled = false },
		opts:   []Option{withCommands(demoRestores())},
	})
	waitReady(t, a)
	resp, m := postCommand(t, a, "restores", policeToken, `{"item_id":"item-3"}`, "Prefer", "respond-async")
	corr, _ := m["correlation_id"].(string)
	if resp.StatusCode != 202 || corr == "" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	restored := func(source, item, corr string) producers.CloudEvent {
		return producers.NewEvent(source, producers.TypeItemRestored, item, corr, map[string]any{"item_id": item, "restored_to": []string{"group-1"}})
	}
	forged := []struct {
		topic  string
		ev     producers.CloudEvent
		reason string
	}{
		{producers.DefaultEventsTopic, restored(producers.ItemServiceSource, "item-3", corr), takedown.ReasonTopic},
		{producers.DemoItemEventsTopic, restored("/forger", "item-3", corr), takedown.ReasonSource},
		{producers.DemoItemEventsTopic, restored(producers.ItemServiceSource, "item-3", "not-ours"), takedown.ReasonUnknown},
		{producers.DemoItemEventsTopic, restored(producers.ItemServiceSource, "item-4", corr), takedown.ReasonItem},
	}
	before := a.recorder.Untrusted()
	for _, f := range forged {
		if err := a.producer.Publish(t.Context(), f.topic, f.ev.Subject, f.ev); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every forgery counted", func() bool {
		now := a.recorder.Untrusted()
		for _, r := range []string{takedown.ReasonTopic, takedown.ReasonSource, takedown.ReasonUnknown, takedown.ReasonItem} {
			if now[r] <= before[r] {
				return false
			}
		}
		return true
	})
	if resp, m := get(t, a, policeToken, "/v1/restores/"+corr); resp.StatusCode != 200 || m["status"] != "pending" {
		t.Fatalf("after forgeries: %d %v", resp.StatusCode, m)
	}
	ok := restored(producers.ItemServiceSource, "item-3", corr)
	if err := a.producer.Publish(t.Context(), producers.DemoItemEventsTopic, ok.Subject, ok); err != nil {
		t.Fatal(err)
	}
	if resp, m := get(t, a, policeToken, "/v1/restores/"+corr, "Prefer", "wait=10"); resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("after the trusted outcome: %d %v", resp.StatusCode, m)
	}
}

// TestCommandsList: GET /v1/commands lists the running configuration's
// commands to any authenticated principal; --demo declares restores.
func TestCommandsList(t *testing.T) {
	a := startTestNode(t, nodeSpec{config: func(c *config.Config) { c.Demo.Enabled = true; c.Demo.Rate = 1 }})
	waitReady(t, a)
	if resp, _ := get(t, a, "", "/v1/commands"); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	resp, m := get(t, a, acmeToken, "/v1/commands")
	list, _ := m["commands"].([]any)
	if resp.StatusCode != 200 || len(list) != 2 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	td, rs := list[0].(map[string]any), list[1].(map[string]any)
	if td["name"] != "takedowns" || td["timeout"] != "10s" || td["path"] != "/v1/takedowns" || rs["name"] != "restores" || rs["outcome_topic"] != "item.events" {
		t.Fatalf("%v", list)
	}
	if f := rs["fields"].(map[string]any); strs(f["required"])[0] != "item_id" {
		t.Fatalf("fields %v", f)
	}
	// The demo's item service answers restores.
	if resp, m := postCommand(t, a, "restores", modToken, `{"item_id":"item-9"}`); resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("restore: %d %v", resp.StatusCode, m)
	}
}

// TestCommandsConfigErrors: declarations the runtime cannot serve are
// refused at start, naming the command and the problem.
func TestCommandsConfigErrors(t *testing.T) {
	mod := func(f func(*config.Command)) config.Command {
		c := demoRestores()
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cmds []config.Command
		want string
	}{
		{"twice", []config.Command{demoRestores(), demoRestores()}, "declared twice"},
		{"reserved name", []config.Command{mod(func(c *config.Command) { c.Name = "sse" })}, "path of the API"},
		{"bad name", []config.Command{mod(func(c *config.Command) { c.Name = "Re stores" })}, "name"},
		{"key not required", []config.Command{mod(func(c *config.Command) { c.Key = "reason" })}, "key"},
		{"no outcomes", []config.Command{mod(func(c *config.Command) { c.Outcomes = nil })}, "outcomes"},
		{"bad status", []config.Command{mod(func(c *config.Command) { c.Outcomes[0].Status = 302 })}, "status 302"},
		{"unknown role", []config.Command{mod(func(c *config.Command) { c.Roles = []string{"admin"} })}, `"admin"`},
		{"no roles", []config.Command{mod(func(c *config.Command) { c.Roles = nil })}, "roles"},
		{"progress is an outcome", []config.Command{mod(func(c *config.Command) { c.Progress = []string{producers.TypeItemRestored} })}, "progress type too"},
		{"reserved member", []config.Command{mod(func(c *config.Command) { c.Fields.Optional = []string{"status"} })}, `"status"`},
		{"no topic", []config.Command{mod(func(c *config.Command) { c.Topic = "" })}, "topic"},
		{"no outcome topic", []config.Command{mod(func(c *config.Command) { c.OutcomeTopic = "" })}, "outcome_topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileCommands(tt.cmds)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "commands[") {
				t.Fatalf("err = %v, want one naming the command and %s", err, tt.want)
			}
		})
	}
	// At start, before anything is started.
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Addr, cfg.Kafka.Embedded.Addr = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	a, err := Start(ctx, cfg, slog.New(slog.DiscardHandler), withCommands(mod(func(c *config.Command) { c.Name = "takedowns" })))
	if err == nil {
		a.Shutdown(ctx)
		t.Fatal("a second takedowns declaration started")
	}
	if !strings.Contains(err.Error(), "declared twice") {
		t.Fatalf("err = %v", err)
	}
}
