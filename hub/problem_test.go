package hub

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestProblems: every problem has its type's URI, title and status, and
// the request ID as its instance; the API mux's own 404 and 405 are
// problems too.
func TestProblems(t *testing.T) {
	api := http.NewServeMux()
	api.HandleFunc("POST /v1/things", func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, Problem{Type: ProblemRateLimited, Detail: "slow down", Extra: map[string]any{"n": 1}})
	})
	api.HandleFunc("GET /v1/plain", func(w http.ResponseWriter, r *http.Request) {
		Error(w, http.StatusConflict, "a status with no type of its own")
	})
	srv := httptest.NewServer(RequestLog(slog.New(slog.DiscardHandler), ProblemMux(api)))
	defer srv.Close()

	tests := []struct {
		name, method, path string
		status             int
		typ, title         string
		allow              string
	}{
		{"declared type", "POST", "/v1/things", 429, "urn:switchboard:problem:rate-limited", "Too Many Requests", ""},
		{"status only", "GET", "/v1/plain", 409, "urn:switchboard:problem:conflict", "Conflict", ""},
		{"no route", "GET", "/v1/nothing", 404, "urn:switchboard:problem:not-found", "Not Found", ""},
		{"wrong method", "DELETE", "/v1/things", 405, "urn:switchboard:problem:method-not-allowed", "Method Not Allowed", "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			req.Header.Set("X-Request-ID", "req-"+tt.method)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
				body["type"] != tt.typ || body["title"] != tt.title || body["status"] != float64(tt.status) ||
				body["instance"] != "req-"+tt.method {
				t.Fatalf("%d %s %v", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if tt.allow != "" && resp.Header.Get("Allow") != tt.allow {
				t.Fatalf("Allow %q, want %q", resp.Header.Get("Allow"), tt.allow)
			}
		})
	}
}
