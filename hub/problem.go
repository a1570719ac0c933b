package hub

import (
	"encoding/json"
	"net/http"
	"strings"
)

// ProblemBase starts every problem type URI. The URIs name a kind of
// problem; docs/problems.md lists them all.
const ProblemBase = "urn:switchboard:problem:"

// ProblemType is one kind of problem: every problem of a type has the same
// type URI, title and status (RFC 9457 §3.1).
type ProblemType struct {
	// Slug ends the type URI: ProblemBase + Slug.
	Slug   string
	Title  string
	Status int
}

// URI is the type's "type" member.
func (t ProblemType) URI() string { return ProblemBase + t.Slug }

// The problem types of the hub and its HTTP API. Other layers (the command
// layer) declare their own with NewProblemType.
var (
	ProblemBadRequest           = ProblemType{"bad-request", "Bad Request", http.StatusBadRequest}
	ProblemUnauthenticated      = ProblemType{"unauthenticated", "Unauthorized", http.StatusUnauthorized}
	ProblemForbidden            = ProblemType{"forbidden", "Forbidden", http.StatusForbidden}
	ProblemNotFound             = ProblemType{"not-found", "Not Found", http.StatusNotFound}
	ProblemMethodNotAllowed     = ProblemType{"method-not-allowed", "Method Not Allowed", http.StatusMethodNotAllowed}
	ProblemRequestTimeout       = ProblemType{"request-timeout", "Request Timeout", http.StatusRequestTimeout}
	ProblemTooLarge             = ProblemType{"too-large", "Content Too Large", http.StatusRequestEntityTooLarge}
	ProblemUnsupportedMediaType = ProblemType{"unsupported-media-type", "Unsupported Media Type", http.StatusUnsupportedMediaType}
	ProblemRateLimited          = ProblemType{"rate-limited", "Too Many Requests", http.StatusTooManyRequests}
	ProblemTooManyConnections   = ProblemType{"too-many-connections", "Too Many Connections", http.StatusTooManyRequests}
	ProblemUnavailable          = ProblemType{"unavailable", "Service Unavailable", http.StatusServiceUnavailable}
)

// genericProblems is the type of a problem known only by its status.
var genericProblems = map[int]ProblemType{}

func init() {
	for _, t := range []ProblemType{ProblemBadRequest, ProblemUnauthenticated, ProblemForbidden, ProblemNotFound,
		ProblemMethodNotAllowed, ProblemRequestTimeout, ProblemTooLarge, ProblemUnsupportedMediaType,
		ProblemRateLimited, ProblemUnavailable} {
		genericProblems[t.Status] = t
	}
}

// Problem is an RFC 9457 problem detail. Extra members are merged into the
// top-level object.
type Problem struct {
	Type   ProblemType
	Detail string
	Extra  map[string]any
}

// WriteProblem writes p as application/problem+json with its type's
// status. Its "instance" is the request ID (the X-Request-ID that
// RequestLog set on the response), so a client's report names the log line.
func WriteProblem(w http.ResponseWriter, p Problem) {
	body := make(map[string]any, 5+len(p.Extra))
	for k, v := range p.Extra {
		body[k] = v
	}
	t := p.Type
	if t.Status == 0 {
		t = ProblemBadRequest
	}
	body["type"] = t.URI()
	body["title"] = t.Title
	body["status"] = t.Status
	if p.Detail != "" {
		body["detail"] = p.Detail
	}
	if id := w.Header().Get("X-Request-Id"); id != "" { // X-Request-ID, canonical
		body["instance"] = id
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(t.Status)
	_, _ = w.Write(append(b, '\n'))
}

// Error writes a problem of the generic type of status with a detail.
func Error(w http.ResponseWriter, status int, detail string) {
	t, ok := genericProblems[status]
	if !ok {
		t = ProblemType{Slug: strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "-")), Title: http.StatusText(status), Status: status}
	}
	WriteProblem(w, Problem{Type: t, Detail: detail})
}

// ProblemMux answers the requests next's ServeMux has no route for (404)
// or no such method for (405, with its Allow header) as problem+json,
// instead of net/http's plain text.
func ProblemMux(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&plainErrorWriter{ResponseWriter: w, path: r.URL.Path}, r)
	})
}

// plainErrorWriter turns net/http's own text/plain 404 and 405 into
// problems; everything else passes through.
type plainErrorWriter struct {
	http.ResponseWriter
	path     string
	swallow  bool
	answered bool
}

func (w *plainErrorWriter) WriteHeader(code int) {
	if w.answered {
		return
	}
	w.answered = true
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.swallow = true
		t, detail := ProblemNotFound, "no such endpoint: "+Clip(w.path, 100)
		if code == http.StatusMethodNotAllowed {
			t, detail = ProblemMethodNotAllowed, "this endpoint allows "+w.Header().Get("Allow")
		}
		WriteProblem(w.ResponseWriter, Problem{Type: t, Detail: detail})
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *plainErrorWriter) Write(b []byte) (int, error) {
	if !w.answered {
		w.WriteHeader(http.StatusOK)
	}
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the doors
// hijack it and set deadlines).
func (w *plainErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher for handlers that type-assert it.
func (w *plainErrorWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
