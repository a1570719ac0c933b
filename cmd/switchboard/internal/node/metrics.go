package node

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/takedown"
)

// Label sets stay bounded: transports, topics, partitions and outcomes;
// never a channel name or a correlation ID.
var (
	connectionsDesc   = prometheus.NewDesc("switchboard_connections", "Open connections by transport.", []string{"transport"}, nil)
	subscriptionsDesc = prometheus.NewDesc("switchboard_subscriptions", "Subscriptions (connection, channel) on this node.", nil, nil)
	deliveriesDesc    = prometheus.NewDesc("switchboard_deliveries_total", "Events offered to local subscribers.", nil, nil)
	publishedDesc     = prometheus.NewDesc("switchboard_events_published_total", "Events accepted into channel history by this node.", nil, nil)
	slowDesc          = prometheus.NewDesc("switchboard_slow_consumers_total", "Subscribers disconnected because their queue overflowed.", nil, nil)
	queueDesc         = prometheus.NewDesc("switchboard_client_queue_depth", "Queue depth of each connected client, at scrape time.", nil, nil)
	consumedDesc      = prometheus.NewDesc("switchboard_consumed_total", "Kafka records handled and committed, by topic.", []string{"topic"}, nil)
	deadDesc          = prometheus.NewDesc("switchboard_dead_lettered_total", "Kafka records sent to the dead-letter topic, by source topic.", []string{"topic"}, nil)
	routeSkippedDesc  = prometheus.NewDesc("switchboard_route_skipped_total", "What routing left out, by topic and reason: type (events of a type the route does not list), missing (channel templates whose placeholder had no value), invalid (channel templates that made no valid channel name).", []string{"topic", "reason"}, nil)
	lagDesc           = prometheus.NewDesc("switchboard_consumer_lag", "Records the consumer group has not committed, by partition.", []string{"topic", "partition"}, nil)
	backplaneErrDesc  = prometheus.NewDesc("switchboard_backplane_errors_total", "Failed backplane calls.", nil, nil)
	heldDesc          = prometheus.NewDesc("switchboard_takedowns_held", "Takedown requests held open now.", nil, nil)
	untrustedDesc     = prometheus.NewDesc("switchboard_untrusted_outcomes_total", "Outcome events that changed no takedown, by reason (topic, source, unknown_correlation, item, malformed).", []string{"reason"}, nil)
	republishedDesc   = prometheus.NewDesc("switchboard_takedown_republished_total", "Takedown commands the sweep published again because no broker had acknowledged them, by result.", []string{"result"}, nil)
	authFailuresDesc  = prometheus.NewDesc("switchboard_auth_failures_total", "Failed authentications, by credential (bearer, access_token, cookie, sign_in).", []string{"credential"}, nil)
	authThrottledDesc = prometheus.NewDesc("switchboard_auth_throttled_total", "Requests refused unchecked (429) because their source address failed to authenticate too often.", nil, nil)
	unauthConnsDesc   = prometheus.NewDesc("switchboard_unauthenticated_connections", "Open connections on which no request has yet carried a valid credential.", nil, nil)
	socketWritesDesc  = prometheus.NewDesc("switchboard_socket_writes_total", "Socket writes of the WebSocket and SSE doors (each batch of queued frames leaves in one).", nil, nil)
	historyBytesDesc  = prometheus.NewDesc("switchboard_history_bytes", "In-memory backplane: the bytes of history all channels hold, as hub.history.max_bytes counts them.", nil, nil)
	historyEvictDesc  = prometheus.NewDesc("switchboard_history_evicted_total", "In-memory backplane: channel entries that left history early because hub.history.max_bytes was reached.", nil, nil)
	recordsDesc       = prometheus.NewDesc("switchboard_takedown_records", "In-memory backplane: the takedowns (and declared-command calls) the outcome store holds.", nil, nil)
	recordsEvictDesc  = prometheus.NewDesc("switchboard_takedown_records_evicted_total", "In-memory backplane: decided takedowns forgotten before takedown.result_ttl because takedown.max_records was reached.", nil, nil)
	lostWritesDesc    = prometheus.NewDesc("switchboard_redis_lost_writes_total", "Channel logs found to have lost writes (a Redis failover or restart): each moved to a new epoch, so its subscribers got a gap.", nil, nil)
	httpGuardDesc     = prometheus.NewDesc("switchboard_http_guard_total", "Connections and requests the HTTP guard refused or closed, by reason (connection_refused, idle_closed, body_timeout, ambiguous_length).", []string{"reason"}, nil)

	queueBuckets = []float64{0, 1, 4, 16, 64, 256, 1024, 4096}
)

// metrics is the node's Prometheus registry: a collector that reads the
// parts' counters at scrape time (nothing on the hot paths), and the
// takedown outcome counter and latency histogram the adapter feeds.
type metrics struct {
	a         *Node
	reg       *prometheus.Registry
	takedowns *prometheus.CounterVec
	latency   prometheus.Histogram
	// commands and commandLatency are the same for every declared
	// command (the takedowns included), by command.
	commands       *prometheus.CounterVec
	commandLatency *prometheus.HistogramVec
	http           *httpMetrics // requests by route and status; wraps the routes
	// answers are the series of each command and outcome seen, so an
	// answer does not look its labels up again (commandOutcome ->
	// *answerSeries).
	answers sync.Map
}

// commandOutcome names the series of one command's answers of one
// outcome.
type commandOutcome struct{ command, outcome string }

// answerSeries are the series an answer of one command and outcome
// feeds; takedowns is nil but for the built-in takedowns.
type answerSeries struct {
	commands  prometheus.Counter
	latency   prometheus.Observer
	takedowns prometheus.Counter
}

func newMetrics(a *Node) *metrics {
	m := &metrics{
		a:   a,
		reg: prometheus.NewRegistry(),
		takedowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_takedowns_total", Help: "Takedown answers by outcome.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchboard_takedown_duration_seconds", Help: "Time from a takedown request to its answer.",
			// Up to past takedown.max_wait, the longest wait.
			Buckets: secondsBuckets(0.005, a.cfg.Takedown.MaxWait),
		}),
	}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_commands_total", Help: "Answers of declared commands (takedowns included) by command and outcome.",
	}, []string{"command", "outcome"})
	m.commandLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "switchboard_command_duration_seconds", Help: "Time from a declared command's request to its answer, by command.",
		Buckets: secondsBuckets(0.005, a.cfg.Takedown.MaxWait),
	}, []string{"command"})
	for _, o := range []string{"confirmed", "not_found", "rejected", "timeout", "accepted", "unavailable"} {
		m.takedowns.WithLabelValues(o)
		for _, c := range a.commands {
			m.commands.WithLabelValues(c.Name, o)
		}
	}
	m.reg.MustRegister(m, m.takedowns, m.latency, m.commands, m.commandLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.http = newHTTPMetrics(a.cfg.Takedown.MaxWait)
	m.reg.MustRegister(m.http, ReadBuildInfo().collector())
	return m
}

// observe is the adapter's Observe: every command's answer, and the
// takedown metrics of the built-in takedowns.
func (m *metrics) observe(command, outcome string, d time.Duration) {
	k := commandOutcome{command, outcome}
	v, ok := m.answers.Load(k)
	if !ok {
		s := &answerSeries{commands: m.commands.WithLabelValues(command, outcome), latency: m.commandLatency.WithLabelValues(command)}
		if command == takedown.TakedownsName {
			s.takedowns = m.takedowns.WithLabelValues(outcome)
		}
		v, _ = m.answers.LoadOrStore(k, s)
	}
	s := v.(*answerSeries)
	s.commands.Inc()
	s.latency.Observe(d.Seconds())
	if s.takedowns != nil {
		s.takedowns.Inc()
		m.latency.Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connectionsDesc, subscriptionsDesc, deliveriesDesc, publishedDesc, slowDesc,
		queueDesc, consumedDesc, deadDesc, routeSkippedDesc, lagDesc, backplaneErrDesc, heldDesc, untrustedDesc, republishedDesc,
		authFailuresDesc, authThrottledDesc, unauthConnsDesc, httpGuardDesc, socketWritesDesc, lostWritesDesc, historyBytesDesc, historyEvictDesc, recordsDesc, recordsEvictDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	a := m.a
	st := a.hub.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(connectionsDesc, float64(st.WSConnections), "ws")
	gauge(connectionsDesc, float64(st.SSEConnections), "sse")
	gauge(subscriptionsDesc, float64(st.Subscriptions))
	counter(deliveriesDesc, float64(st.Deliveries))
	counter(publishedDesc, float64(st.Published))
	counter(slowDesc, float64(st.SlowConsumers))
	counter(backplaneErrDesc, float64(st.BackplaneErrors))
	counter(socketWritesDesc, float64(st.Writes))
	switch bp := a.bp.(type) {
	case *redisbus.Bus:
		counter(lostWritesDesc, float64(bp.LostWrites.Load()))
	case *hub.Memory:
		gauge(historyBytesDesc, float64(bp.HistoryBytes()))
		counter(historyEvictDesc, float64(bp.Evicted()))
	}
	if st, ok := a.store.(*takedown.MemoryStore); ok {
		gauge(recordsDesc, float64(st.Len()))
		counter(recordsEvictDesc, float64(st.Evicted()))
	}
	gauge(heldDesc, float64(a.takedowns.Held()))
	for reason, n := range a.recorder.Untrusted() {
		counter(untrustedDesc, float64(n), reason)
	}
	ok, failed := a.takedowns.Republished()
	counter(republishedDesc, float64(ok), "published")
	counter(republishedDesc, float64(failed), "failed")
	as := a.auth.Stats()
	for _, k := range auth.CredentialKinds {
		counter(authFailuresDesc, float64(as.Failures[k]), k)
	}
	counter(authThrottledDesc, float64(as.Throttled))
	if a.guard != nil {
		gs := a.guard.Stats()
		gauge(unauthConnsDesc, float64(gs.Unauthenticated))
		for _, r := range hub.GuardReasons {
			counter(httpGuardDesc, float64(gs.Counts[r]), r)
		}
	}

	buckets := make(map[float64]uint64, len(queueBuckets))
	var n uint64
	var sum float64
	a.hub.QueueDepths(func(d int) {
		n++
		sum += float64(d)
		for _, b := range queueBuckets {
			if float64(d) <= b {
				buckets[b]++
			}
		}
	})
	ch <- prometheus.MustNewConstHistogram(queueDesc, n, sum, buckets)

	for topic, ts := range a.consumer.TopicStats() {
		counter(consumedDesc, float64(ts.Consumed), topic)
		counter(deadDesc, float64(ts.DeadLettered), topic)
	}
	for topic, rs := range a.consumer.RouteStats() {
		counter(routeSkippedDesc, float64(rs.Filtered), topic, "type")
		counter(routeSkippedDesc, float64(rs.Missing), topic, "missing")
		counter(routeSkippedDesc, float64(rs.Invalid), topic, "invalid")
	}
	for _, l := range a.lag.Last() {
		gauge(lagDesc, float64(l.Lag), l.Topic, strconv.Itoa(l.Partition))
	}
}
