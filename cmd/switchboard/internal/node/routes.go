package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard/switchboard/docs"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/static"
	"github.com/switchboard/switchboard/tracing"
)

func (a *Node) routes() http.Handler {
	// The API: every /v1/ request passes the Origin check first, then the
	// failed-authentication throttle, before any door sees its credential.
	api := http.NewServeMux()
	api.Handle("GET /v1/sse", a.hub.SSEHandler(hub.SSEConfig{Heartbeat: a.cfg.SSE.Heartbeat, Retry: a.cfg.SSE.Retry, Guard: a.auth}))
	api.Handle("GET /v1/ws", a.hub.WSHandler(hub.WSConfig{
		PingInterval:    a.cfg.WS.PingInterval,
		MaxMessageBytes: a.cfg.WS.MaxMessageBytes,
		WriteTimeout:    a.cfg.WS.WriteTimeout,
		OriginPatterns:  a.cfg.HTTP.AllowedOrigins,
		Guard:           a.auth,
		Frames:          map[string]hub.FrameHandler{"takedown": a.takedowns.Frame, "call": a.takedowns.Call},
	}))
	// Every declared command (SPEC §5.1), the takedown among them. A POST
	// carries the request's trace context to the command (SPEC §10).
	var posts []string
	for _, c := range a.takedowns.Commands().List() {
		roles := c.HTTPRoles()
		if len(roles) == 0 {
			roles = []auth.Role{auth.Role("-")} // over WebSocket only: HTTP refuses every role
		}
		post := "POST /v1/" + c.Name
		posts = append(posts, post)
		api.Handle(post, tracing.Handler(post, a.auth.Require(a.takedowns.PostHandler(c.Name), roles...)))
		api.Handle("GET /v1/"+c.Name+"/{correlation_id}", a.auth.Require(a.takedowns.GetHandler(c.Name)))
	}
	api.Handle("GET /v1/commands", a.auth.Require(http.HandlerFunc(a.listCommands)))
	api.Handle("/v1/session", a.auth.SessionHandler())
	api.Handle("GET /v1/stats/reports", a.auth.Require(a.stats, auth.RoleModerator))

	mux := http.NewServeMux()
	apiHandler := auth.CORS(a.cfg.HTTP.AllowedOrigins, a.auth.Throttle(hub.ProblemMux(api)))
	mux.Handle("/v1/", apiHandler)
	// The commands' POSTs, literally, to the same handler: the mux then
	// finds them without the search under "/v1/" (three allocations per
	// request). Their route is the API's pattern all the same.
	for _, post := range posts {
		mux.Handle(post, apiHandler)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(docs.OpenAPI)
	})
	mux.Handle("GET /v1/sdk/switchboard.js", static.SDKHandler()) // public: outside the API's Origin check
	mux.Handle("/", static.Handler())
	return a.metrics.http.wrap(mux, api)
}

// observeCommand feeds the metrics, which exist once the node is up.
func (a *Node) observeCommand(command, outcome string, d time.Duration) {
	if a.metrics != nil {
		a.metrics.observe(command, outcome, d)
	}
}

// readyTimeout bounds each readiness check on its own, so a dependency
// that hangs is named as the one that failed and does not use up the
// others' time.
const readyTimeout = 2 * time.Second

// readinessCheck is one dependency /readyz asks about.
type readinessCheck struct {
	name  string
	check func(context.Context) error
}

// readinessChecks are the dependencies of a ready node.
func (a *Node) readinessChecks() []readinessCheck {
	checks := []readinessCheck{
		{"kafka", a.consumer.Ready},
		{"backplane", a.hub.Healthy},
		{"consumer", a.consumer.Healthy},
		{"producer", a.producer.Healthy},
	}
	if a.itemsvc != nil {
		checks = append(checks, readinessCheck{"itemsvc", a.itemsvc.Healthy})
	}
	return checks
}

// readyz answers 200 when every dependency answers and the node is not
// shutting down, 503 otherwise. The checks run at once, each with its own
// deadline; the body holds each one's result and names the failed ones.
func (a *Node) readyz(w http.ResponseWriter, r *http.Request) {
	checks := a.readinessChecks()
	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			results[i] = c.check(ctx)
		})
	}
	wg.Wait()
	body := map[string]string{}
	var failed []string
	for i, c := range checks {
		body[c.name] = "ok"
		if err := results[i]; err != nil {
			body[c.name] = err.Error()
			failed = append(failed, c.name)
		}
	}
	status, code := "ok", http.StatusOK
	if len(failed) > 0 {
		status, code = "unavailable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	out := map[string]any{"status": status, "checks": body}
	if len(failed) > 0 {
		out["failed"] = failed
	}
	json.NewEncoder(w).Encode(out)
}
