package node

import (
	"math"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchboard/switchboard/config"
)

// scrapeFamilies reads /metrics into its metric families.
func scrapeFamilies(t *testing.T, a *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(a.base() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// labels returns a metric's labels by name.
func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the metric of family f whose labels include want, or nil.
func find(f *dto.MetricFamily, want map[string]string) *dto.Metric {
	for _, m := range f.GetMetric() {
		ls := labels(m)
		match := true
		for k, v := range want {
			match = match && ls[k] == v
		}
		if match {
			return m
		}
	}
	return nil
}

// topBucket is a histogram's largest finite upper bound.
func topBucket(m *dto.Metric) float64 {
	top := math.Inf(-1)
	for _, b := range m.GetHistogram().GetBucket() {
		if ub := b.GetUpperBound(); !math.IsInf(ub, 1) && ub > top {
			top = ub
		}
	}
	return top
}

// TestHTTPMetrics: /metrics has switchboard_build_info, and counts each
// request by the route that served it (the pattern, never the raw path)
// and its status, streams as they start, with latency buckets that reach
// past takedown.max_wait, like the takedown histogram's.
func TestHTTPMetrics(t *testing.T) {
	const maxWait = 100 * time.Second // above the default buckets' top
	a := startTestApp(t, func(c *config.Config) {
		c.ItemSvc.Latency = 0
		c.Takedown.MaxWait = maxWait
	})
	waitReady(t, a)

	do := func(method, path, token string) int {
		t.Helper()
		resp, _, err := call(t.Context(), nil, method, a.base()+path, headers(token), "")
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	for range 2 {
		if code := do("GET", "/healthz", ""); code != 200 {
			t.Fatalf("healthz %d", code)
		}
	}
	if code := do("GET", "/v1/takedowns/raw-id-12345", modToken); code != 404 {
		t.Fatalf("unknown takedown %d", code)
	}
	if code := do("GET", "/v1/no-such-endpoint", modToken); code != 404 {
		t.Fatalf("unknown endpoint %d", code)
	}
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"test"}`); resp.StatusCode != 200 {
		t.Fatalf("takedown %d", resp.StatusCode)
	}
	// A stream counts when it starts, not when it ends.
	openSSE(t, a.base()+"/v1/sse?channel=reports")
	ws := dialWS(t, a)
	defer ws.Close(websocket.StatusNormalClosure, "")

	fams := scrapeFamilies(t, a)

	bi := fams["switchboard_build_info"]
	if bi == nil || len(bi.GetMetric()) != 1 || bi.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("switchboard_build_info: %v", bi)
	}
	ls := labels(bi.GetMetric()[0])
	if ls["go_version"] != runtime.Version() || ls["version"] == "" || ls["revision"] == "" || len(ls) != 3 {
		t.Errorf("switchboard_build_info labels %v", ls)
	}

	reqs := fams["switchboard_http_requests_total"]
	if reqs == nil {
		t.Fatal("no switchboard_http_requests_total")
	}
	for _, w := range []struct {
		route, code string
		n           float64
	}{
		{"GET /healthz", "200", 2},
		{"GET /v1/takedowns/{correlation_id}", "404", 1},
		{"/v1/", "404", 1},
		{"POST /v1/takedowns", "200", 1},
		{"GET /v1/sse", "200", 1},
		{"GET /v1/ws", "101", 1},
	} {
		m := find(reqs, map[string]string{"route": w.route, "code": w.code})
		if got := m.GetCounter().GetValue(); m == nil || got != w.n {
			t.Errorf("switchboard_http_requests_total{route=%q,code=%q} = %v, want %v", w.route, w.code, got, w.n)
		}
	}
	for _, f := range []*dto.MetricFamily{reqs, fams["switchboard_http_request_duration_seconds"]} {
		for _, m := range f.GetMetric() {
			if r := labels(m)["route"]; strings.Contains(r, "raw-id") || strings.Contains(r, "no-such") {
				t.Errorf("%s has a raw path as route: %q", f.GetName(), r)
			}
		}
	}

	lat := fams["switchboard_http_request_duration_seconds"]
	m := find(lat, map[string]string{"route": "POST /v1/takedowns", "class": "2xx"})
	if m == nil || m.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("switchboard_http_request_duration_seconds{route=POST /v1/takedowns,class=2xx}: %v", m)
	}
	if top := topBucket(m); top <= maxWait.Seconds() {
		t.Errorf("HTTP latency buckets end at %v s, not above takedown.max_wait %v", top, maxWait)
	}
	td := fams["switchboard_takedown_duration_seconds"]
	if td == nil || len(td.GetMetric()) != 1 {
		t.Fatalf("switchboard_takedown_duration_seconds: %v", td)
	}
	if top := topBucket(td.GetMetric()[0]); top <= maxWait.Seconds() {
		t.Errorf("takedown duration buckets end at %v s, not above takedown.max_wait %v", top, maxWait)
	}
}

// TestSecondsBuckets: the buckets double from the start to the first one
// above top.
func TestSecondsBuckets(t *testing.T) {
	tests := []struct {
		start float64
		top   time.Duration
		n     int
		last  float64
	}{
		{0.005, 55 * time.Second, 15, 81.92},
		{0.005, 40960 * time.Millisecond, 15, 81.92}, // a bucket equal to top is not above it
		{0.001, 0, 1, 0.001},
	}
	for _, tt := range tests {
		b := secondsBuckets(tt.start, tt.top)
		if len(b) != tt.n || math.Abs(b[len(b)-1]-tt.last) > 1e-9 || b[0] != tt.start {
			t.Errorf("secondsBuckets(%v, %v) = %v, want %d buckets ending at %v", tt.start, tt.top, b, tt.n, tt.last)
		}
	}
}
