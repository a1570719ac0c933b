package takedown

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// The problem types of a declared command's answers (the takedown keeps
// its v1 ones). A rejection's status is its outcome rule's.
var (
	ProblemCommandRejected = hub.ProblemType{Slug: "command-rejected", Title: "Command rejected", Status: http.StatusUnprocessableEntity}
	ProblemNoOutcome       = hub.ProblemType{Slug: "no-outcome-in-time", Title: "No outcome in time", Status: http.StatusGatewayTimeout}
)

// noun names a call of c in logs and answers.
func (c *Command) noun() string {
	if c.builtin {
		return "takedown"
	}
	return c.Name + " call"
}

// observeCmd tells Config.Observe of an answer of c.
func (a *Adapter) observeCmd(c *Command, outcome string, start time.Time) {
	if a.cfg.Observe != nil {
		a.cfg.Observe(c.Name, outcome, time.Since(start))
	}
}

// code is the HTTP status of a final record: its rule's, or for a
// takedown stored before rules had codes, the v1 table's.
func (rec *Record) code() int {
	switch {
	case rec.Code != 0:
		return rec.Code
	case rec.Status == StatusConfirmed:
		return http.StatusOK
	case rec.RejectReason == "not_found":
		return http.StatusNotFound
	default:
		return http.StatusUnprocessableEntity
	}
}

// terminalData is the data of a final record's terminal event, as an
// object's members (none when it has no object data).
func terminalData(rec *Record) map[string]any {
	var ev struct {
		Data json.RawMessage `json:"data"`
	}
	out := map[string]any{}
	if json.Unmarshal(rec.Event, &ev) == nil && len(ev.Data) > 0 {
		var m map[string]json.RawMessage
		if json.Unmarshal(ev.Data, &m) == nil {
			for k, v := range m {
				out[k] = v
			}
		}
	}
	return out
}

// answerBody is a final call's body: its terminal event's data, with
// correlation_id and status.
func answerBody(rec *Record) map[string]any {
	body := terminalData(rec)
	body["correlation_id"] = rec.CorrelationID
	body["status"] = rec.Status
	return body
}

// respondCommand answers a declared command's call, as respond does the
// takedown's: 2xx with the terminal event's data, a rejection as
// problem+json with its rule's status, 202 or 504 with Location.
func (a *Adapter) respondCommand(c *Command, w http.ResponseWriter, rec *Record, prefs Preferences) {
	id := rec.CorrelationID
	switch {
	case rec.Final() && rec.code() < 300:
		writeJSON(w, rec.code(), answerBody(rec))
	case rec.Final():
		t := ProblemCommandRejected
		t.Status = rec.code()
		detail := c.Name + " rejected"
		if rec.RejectReason != "" {
			detail += ": " + rec.RejectReason
		}
		extra := map[string]any{"correlation_id": id, c.Key: rec.ItemID, "command": c.Name}
		if rec.RejectReason != "" {
			extra["reason"] = rec.RejectReason
		}
		problem(w, t, detail, extra)
	case prefs.RespondAsync:
		w.Header().Set("Location", c.StatusURL(id))
		w.Header().Set("Retry-After", "1")
		applied := "respond-async"
		if prefs.Wait > 0 {
			applied += ", wait=" + strconv.Itoa(int(prefs.Wait.Round(time.Second).Seconds()))
		}
		w.Header().Set("Preference-Applied", applied)
		body := commandState(c, rec)
		body["status_url"] = c.StatusURL(id)
		writeJSON(w, http.StatusAccepted, body)
	default:
		w.Header().Set("Location", c.StatusURL(id))
		problem(w, ProblemNoOutcome,
			"no outcome yet; the "+c.Name+" call goes on: read status_url, or retry with the same Idempotency-Key",
			map[string]any{"correlation_id": id, c.Key: rec.ItemID, "command": c.Name, "status_url": c.StatusURL(id)})
	}
}

// commandState is a declared command's state (GET /v1/<name>/{id}):
// correlation_id, command, status, the key member, the progress events so
// far, and once final, the terminal event's data and its code.
func commandState(c *Command, rec *Record) map[string]any {
	body := map[string]any{}
	if rec.Final() {
		body = terminalData(rec)
		body["code"] = rec.code()
		if rec.RejectReason != "" {
			body["reason"] = rec.RejectReason
		}
	}
	body["correlation_id"] = rec.CorrelationID
	body["command"] = c.Name
	body["status"] = rec.Status
	body[c.Key] = rec.ItemID
	progress := rec.Progress
	if progress == nil {
		progress = []json.RawMessage{}
	}
	body["progress"] = progress
	return body
}
