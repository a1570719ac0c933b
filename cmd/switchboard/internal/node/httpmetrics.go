package node

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// unmatchedRoute is the route label of a request no pattern matched.
const unmatchedRoute = "unmatched"

// httpMetrics counts HTTP requests and times their answers by route: the
// ServeMux pattern that matched, such as "POST /v1/takedowns", never the
// raw path, so the label values are as few as the routes.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// children are the series of each route and status seen, so a
	// request does not look its labels up again (routeStatus ->
	// *routeSeries).
	children sync.Map
}

// routeStatus names a route's series for one status.
type routeStatus struct {
	route string
	code  int
}

// routeSeries are the request counter and the duration histogram of one
// route and status.
type routeSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// observe counts a request of route answered with code, d after it came.
func (h *httpMetrics) observe(route string, code int, d time.Duration) {
	k := routeStatus{route, code}
	s, ok := h.children.Load(k)
	if !ok {
		s, _ = h.children.LoadOrStore(k, &routeSeries{
			requests: h.requests.WithLabelValues(route, strconv.Itoa(code)),
			duration: h.duration.WithLabelValues(route, strconv.Itoa(code/100)+"xx"),
		})
	}
	rs := s.(*routeSeries)
	rs.requests.Inc()
	rs.duration.Observe(d.Seconds())
}

// newHTTPMetrics sizes the latency buckets up to past maxWait, the longest
// a held takedown request may wait.
func newHTTPMetrics(maxWait time.Duration) *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_http_requests_total",
			Help: "HTTP requests by route (the pattern that matched) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchboard_http_request_duration_seconds",
			Help: "Time from an HTTP request to its response head (for SSE and WebSocket, to the start of the stream), by route and status class.",
			// From 1 ms to past the longest held takedown.
			Buckets: secondsBuckets(0.001, maxWait),
		}, []string{"route", "class"}),
	}
}

// Describe implements prometheus.Collector.
func (h *httpMetrics) Describe(ch chan<- *prometheus.Desc) {
	h.requests.Describe(ch)
	h.duration.Describe(ch)
}

// Collect implements prometheus.Collector.
func (h *httpMetrics) Collect(ch chan<- prometheus.Metric) {
	h.requests.Collect(ch)
	h.duration.Collect(ch)
}

// wrap counts and times every request outer serves. A request's route is
// the pattern that matches it in the first of nested that has one (the
// muxes outer hands a subtree to, such as the API's), else in outer.
func (h *httpMetrics) wrap(outer *http.ServeMux, nested ...*http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &routeWriter{ResponseWriter: w, m: h, route: route(r, outer, nested), start: time.Now()}
		outer.ServeHTTP(rw, r)
		rw.record(http.StatusOK) // net/http answers 200 for a handler that wrote nothing
	})
}

// route finds the pattern that serves r. For a CONNECT request ServeMux
// may return a path rather than a pattern, and no route serves CONNECT.
func route(r *http.Request, outer *http.ServeMux, nested []*http.ServeMux) string {
	if r.Method == http.MethodConnect {
		return unmatchedRoute
	}
	for _, m := range nested {
		if _, p := m.Handler(r); p != "" {
			return p
		}
	}
	if _, p := outer.Handler(r); p != "" {
		return p
	}
	return unmatchedRoute
}

// routeWriter records its request once, when the response head goes out:
// a final status, the first write or flush, or a hijack (the SSE door
// writes its own 200 head on the hijacked connection).
type routeWriter struct {
	http.ResponseWriter
	m        *httpMetrics
	route    string
	start    time.Time
	recorded bool
}

func (w *routeWriter) record(code int) {
	if w.recorded {
		return
	}
	w.recorded = true
	w.m.observe(w.route, code, time.Since(w.start))
}

// WriteHeader records a final status, then passes it on.
func (w *routeWriter) WriteHeader(code int) {
	// 1xx but 101 are interim responses; the final one follows.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.record(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records 200 unless a status was, then passes b on.
func (w *routeWriter) Write(b []byte) (int, error) {
	w.record(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

// FlushError lets http.ResponseController flush, and records first.
func (w *routeWriter) FlushError() error {
	w.record(http.StatusOK)
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher for handlers that type-assert it.
func (w *routeWriter) Flush() { _ = w.FlushError() }

// Hijack hands over the connection. The request is recorded when the
// handler returns (200: the SSE door writes its own 200 head), or, for a
// held takedown handed off from net/http, when its answer is written
// (HandOff).
func (w *routeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// HandOff (takedown.HandOffRecorder) records the request when its
// handed-off answer is written, not when the handler returns; a client
// that hung up first (status 0) counts as a handler that wrote nothing.
func (w *routeWriter) HandOff() func(status int, bytes int64) {
	w.recorded = true // nothing at the handler's return
	m, route, start := w.m, w.route, w.start
	return func(status int, _ int64) {
		if status == 0 {
			status = http.StatusOK
		}
		m.observe(route, status, time.Since(start))
	}
}

// Unwrap lets http.ResponseController reach deadlines underneath.
func (w *routeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// secondsBuckets are histogram buckets from start seconds, doubling, up to
// the first one above top, so no observation up to top falls in +Inf only.
func secondsBuckets(start float64, top time.Duration) []float64 {
	n := 1
	for b := start; b <= top.Seconds() && n < 64; b *= 2 {
		n++
	}
	return prometheus.ExponentialBuckets(start, 2, n)
}
