// Package node builds a Switchboard node from its configuration: the
// embedded broker or the Kafka connection, the producer, the backplane,
// the hub, the consumer, the takedown adapter, the simulated item
// service, authentication, and the HTTP server with its routes, health
// checks and metrics. The command's main parses flags and configuration
// and calls Run.
package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/docs"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
	"github.com/switchboard/switchboard/static"
)

// Run starts a node with cfg, logging to stderr, prints where to find it
// on out, and runs until ctx ends; then it shuts down gracefully, within
// http.shutdown_timeout.
func Run(ctx context.Context, cfg config.Config, out io.Writer) error {
	log := newLogger(cfg.Log, os.Stderr)
	a, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if len(a.devTokens) > 0 {
		// The link signs the browser in; the page swaps the token for a
		// session cookie and drops it from the address bar.
		fmt.Fprintf(out, "Switchboard is running. Open %s?access_token=%s\n", a.URL(), a.devTokens[auth.RoleModerator])
		fmt.Fprintln(out, "No auth.principals configured: development tokens for this run only (do not use in production):")
		for _, r := range []auth.Role{auth.RoleModerator, auth.RolePartner, auth.RolePolice} {
			fmt.Fprintf(out, "  %-9s %s\n", r, a.devTokens[r])
		}
	} else {
		fmt.Fprintf(out, "Switchboard is running. Open %s\n", a.URL())
	}
	if a.broker != nil {
		fmt.Fprintf(out, "Embedded Kafka-protocol broker: %s (try: kcat -b %s -L)\n", a.kafkaAddr, a.kafkaAddr)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	return a.Shutdown(sctx)
}

// Node is one running Switchboard node: its parts in the order they start.
type Node struct {
	cfg       config.Config
	log       *slog.Logger
	broker    *kfake.Cluster
	kafkaAddr string
	producer  *producers.Producer
	bp        hub.Backplane
	hub       *hub.Hub
	consumer  *consumers.Consumer
	lag       *lagSampler      // the consumer's lag, sampled for /metrics
	itemsvc   *itemsvc.Service // nil unless itemsvc.enabled
	store     takedownStore
	recorder  *takedown.Recorder
	takedowns *takedown.Adapter
	auth      *auth.Auth
	devTokens map[auth.Role]string
	metrics   *metrics
	backplane string
	guard     *hub.HTTPGuard
	cert      *auth.Certificate // nil without http.tls.cert_file
	proxies   *auth.TrustedProxies
	stopHUP   func() // stops reloading cert on SIGHUP
	srv       *http.Server
	ln        net.Listener
	// redisPrefix starts every Redis key of the backplane and the outcome
	// store; redisbus.DefaultPrefix unless an Option changed it.
	redisPrefix string
	lagOpts     []func(*lagSampler) // test hooks on the lag sampler

	cancel context.CancelFunc // stops the background parts
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

// Option adjusts a node beyond its configuration. Only tests use one.
type Option func(*Node)

// withRedisPrefix makes the node's Redis keys start with prefix instead of
// redisbus.DefaultPrefix, so tests that share one real Redis server never
// see each other's keys. Nodes meant to share state need the same prefix.
func withRedisPrefix(prefix string) Option {
	return func(a *Node) { a.redisPrefix = prefix }
}

// withLagSampler lets a test adjust the lag sampler before it starts.
func withLagSampler(f func(*lagSampler)) Option {
	return func(a *Node) { a.lagOpts = append(a.lagOpts, f) }
}

// Start brings every part of a node up, in order, and serves HTTP; on
// error it tears down what it started.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) (_ *Node, err error) {
	a := &Node{cfg: cfg, log: log, redisPrefix: redisbus.DefaultPrefix}
	for _, o := range opts {
		o(a)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	defer func() {
		if err != nil {
			a.Shutdown(context.Background())
		}
	}()

	brokers := cfg.Kafka.Brokers
	if cfg.Embedded() {
		if err := a.startBroker(); err != nil {
			return nil, err
		}
		brokers = []string{a.kafkaAddr}
	} else if err := kafkaconn.Check(ctx, cfg.KafkaConn(), brokers); err != nil {
		return nil, fmt.Errorf("kafka.brokers: %w", err)
	}
	a.producer, err = producers.New(producers.Config{Brokers: brokers, Conn: cfg.KafkaConn()}, log)
	if err != nil {
		return nil, err
	}
	if err := a.startBackplane(ctx); err != nil {
		return nil, err
	}
	a.hub, err = hub.New(hub.Config{ClientQueue: cfg.Hub.ClientQueue, ClientQueueBytes: cfg.Hub.ClientQueueBytes, MaxChannels: cfg.Hub.MaxChannels}, a.bp, log)
	if err != nil {
		return nil, err
	}
	if err := a.startAuth(); err != nil {
		return nil, err
	}
	t := cfg.Kafka.Topics
	trust := takedown.Trust{Topic: t.Events, Sources: cfg.Takedown.OutcomeSources}
	a.recorder = &takedown.Recorder{Store: a.store, Next: a.hub, Trust: trust}
	a.consumer, err = consumers.New(consumers.Config{
		Brokers:           brokers,
		Conn:              cfg.KafkaConn(),
		GroupID:           cfg.Kafka.GroupID,
		DLQTopic:          t.DLQ,
		SessionTimeout:    cfg.Kafka.SessionTimeout,
		HeartbeatInterval: cfg.Kafka.HeartbeatInterval,
		RebalanceTimeout:  cfg.Kafka.RebalanceTimeout,
		Routes: []consumers.Route{
			{Topic: t.Reports, Channels: cfg.Routing.Reports},
			{Topic: t.Commands, Channels: cfg.Routing.Commands},
			{Topic: t.Events, Channels: cfg.Routing.Events},
		},
	}, a.recorder, a.producer, log)
	if err != nil {
		return nil, err
	}
	a.takedowns, err = takedown.New(takedown.Config{
		CommandsTopic: t.Commands,
		Timeout:       cfg.Takedown.Timeout,
		MaxWait:       cfg.Takedown.MaxWait,
		MaxBodyBytes:  cfg.HTTP.MaxBodyBytes,
		PublishWait:   cfg.Takedown.PublishTimeout,
		Trust:         trust,
		Observe:       a.observeTakedown,
	}, a.hub, a.store, a.producer, a.auth, log)
	if err != nil {
		return nil, err
	}
	a.goRun("consumer", a.consumer.Run, bg)
	a.lag = &lagSampler{lag: a.consumer.Lag, interval: lagSampleInterval, log: log}
	for _, o := range a.lagOpts {
		o(a.lag)
	}
	a.goRun("lag sampler", a.lag.Run, bg)
	a.goRun("takedown sweep", a.takedowns.Run, bg)
	if cfg.ItemSvc.Enabled {
		a.itemsvc, err = newItemService(cfg, brokers, a.producer, log)
		if err != nil {
			return nil, err
		}
		a.goRun("itemsvc", a.itemsvc.Run, bg)
	}
	if cfg.Demo.Enabled {
		a.goRun("demo", producers.NewDemo(a.producer, t.Reports, cfg.Demo.Rate, log).Run, bg)
	}

	a.metrics = newMetrics(a)
	if err := a.startHTTP(); err != nil {
		return nil, err
	}
	log.Info("switchboard started", "http", a.ln.Addr().String(), "kafka", brokers, "backplane", a.backplane)
	return a, nil
}

// goRun runs fn in a goroutine the node waits for at shutdown, logging
// its error unless ctx ended.
func (a *Node) goRun(name string, fn func(context.Context) error, ctx context.Context) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			a.log.Error(name+" stopped", "err", err)
		}
	}()
}

// URL is where a browser finds the page.
func (a *Node) URL() string {
	host, port, _ := net.SplitHostPort(a.ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	scheme := "http://"
	if a.cert != nil {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, port) + "/"
}

// Shutdown stops accepting, closes WebSockets with 1001 and ends SSE streams,
// stops consuming (committing offsets and leaving the group), then closes
// the producer and the broker. It is idempotent.
func (a *Node) Shutdown(ctx context.Context) error {
	a.once.Do(func() {
		var errs []error
		if a.srv != nil {
			done := make(chan error, 1)
			go func() { done <- a.srv.Shutdown(ctx) }()
			if err := a.hub.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
			if err := <-done; err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
		}
		a.cancel()
		a.wg.Wait()
		if a.stopHUP != nil {
			a.stopHUP()
		}
		if a.auth != nil {
			a.auth.Close()
		}
		if a.producer != nil {
			errs = append(errs, a.producer.Close())
		}
		if c, ok := a.bp.(hub.Closer); ok {
			c.Close()
		}
		if a.broker != nil {
			a.broker.Close()
		}
		a.err = errors.Join(errs...)
		a.log.Info("switchboard stopped", "err", a.err)
	})
	return a.err
}

// takedownStore is the outcome store, which also tells auth who owns a
// takedown's corr: channel.
type takedownStore interface {
	takedown.Store
	auth.Owners
}

// startBackplane picks the backplane and the outcome store: Redis when
// redis.url is set (shared by every node), memory otherwise.
func (a *Node) startBackplane(ctx context.Context) error {
	h := a.cfg.Hub.History
	if a.cfg.Redis.URL == "" {
		a.bp = hub.NewMemory(hub.MemoryConfig{HistorySize: h.Size, HistoryTTL: h.TTL})
		a.store = takedown.NewMemoryStore(a.cfg.Takedown.ResultTTL)
		a.backplane = "memory"
		return nil
	}
	bus, err := redisbus.Open(ctx, a.cfg.Redis.URL, redisbus.Config{HistorySize: h.Size, HistoryTTL: h.TTL, Prefix: a.redisPrefix}, a.log.With("component", "redis"))
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	a.bp = bus
	a.store = takedown.NewRedisStore(bus.Client(), a.cfg.Takedown.ResultTTL, a.redisPrefix)
	a.backplane = "redis"
	return nil
}

// startAuth builds the principals, or development tokens when none are
// configured.
func (a *Node) startAuth() error {
	var ps []auth.PrincipalConfig
	for _, p := range a.cfg.Auth.Principals {
		ps = append(ps, auth.PrincipalConfig{Name: p.Name, Role: p.Role, TokenSHA256: p.TokenSHA256, Token: p.Token, Channels: p.Channels})
	}
	if len(ps) == 0 {
		ps, a.devTokens = auth.DevPrincipals()
		a.log.Warn("no auth.principals configured: made one random development token per role (printed once on stdout); this is a development setup")
	}
	// Sign-outs are shared like the outcome store: in Redis, under the
	// backplane's prefix, when there is one.
	var revoked auth.Revocations = auth.NewMemoryRevocations()
	if bus, ok := a.bp.(*redisbus.Bus); ok {
		revoked = auth.NewRedisRevocations(bus.Client(), a.redisPrefix)
	}
	// Only http.trusted_proxies may name the client's address and scheme;
	// with none, every request is taken as it arrived.
	proxies, err := auth.NewTrustedProxies(a.cfg.HTTP.TrustedProxies)
	a.proxies = proxies
	if err != nil {
		return fmt.Errorf("http.trusted_proxies: %w", err)
	}
	a.auth, err = auth.New(auth.Config{
		Principals:     ps,
		MaxConnections: a.cfg.Limits.Connections,
		TakedownRate:   a.cfg.Limits.TakedownRate,
		TakedownBurst:  a.cfg.Limits.TakedownBurst,
		SessionTTL:     a.cfg.Auth.SessionTTL,
		SessionSecret:  a.cfg.Auth.SessionSecret,
		FailureRate:    a.cfg.Limits.AuthFailureRate,
		FailureBurst:   a.cfg.Limits.AuthFailureBurst,
		FailureSources: a.cfg.Limits.AuthFailureSources,
		SourceAddr:     proxies.SourceAddr,
		HTTPS:          proxies.HTTPS,
		Revocations:    revoked,
		JWT:            a.cfg.AuthJWT(),
	}, a.store, a.log)
	return err
}

// startBroker starts the embedded Kafka-protocol broker on
// kafka.embedded.addr with the configured topics.
func (a *Node) startBroker() error {
	addr := a.cfg.Kafka.Embedded.Addr
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kafka.embedded.addr: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	t := a.cfg.Kafka.Topics
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(p),
		kfake.ListenFn(func(string, string) (net.Listener, error) { return ln, nil }),
		kfake.SeedTopics(int32(a.cfg.Kafka.Embedded.Partitions), t.Reports, t.Commands, t.Events, t.DLQ),
	)
	if err != nil {
		ln.Close()
		return fmt.Errorf("embedded broker: %w", err)
	}
	a.broker = c
	a.kafkaAddr = ln.Addr().String()
	a.log.Info("embedded Kafka-protocol broker listening", "addr", a.kafkaAddr,
		"topics", []string{t.Reports, t.Commands, t.Events, t.DLQ}, "partitions", a.cfg.Kafka.Embedded.Partitions)
	return nil
}

// startHTTP listens on http.addr and serves the routes behind the HTTP
// guard, over TLS when http.tls is set.
func (a *Node) startHTTP() error {
	var err error
	a.ln, err = net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http.addr: %w", err)
	}
	// The guard bounds what a client holds without using it: a body's
	// time to arrive, ambiguous lengths, connections never authenticated.
	// The doors that hijack or stream keep their own deadlines.
	a.guard, err = hub.NewHTTPGuard(hub.HTTPGuardConfig{
		BodyTimeout:        a.cfg.HTTP.BodyTimeout,
		MaxBodyBytes:       a.cfg.HTTP.MaxBodyBytes,
		MaxUnauthenticated: a.cfg.Limits.UnauthenticatedConnections,
	}, a.log.With("component", "httpguard"))
	if err != nil {
		return err
	}
	if a.cfg.HTTP.TLS.Enabled() {
		a.cert, err = auth.NewCertificate(a.cfg.HTTP.TLS.CertFile, a.cfg.HTTP.TLS.KeyFile, a.log.With("component", "tls"))
		if err != nil {
			return fmt.Errorf("http.tls.cert_file: %w", err)
		}
		a.stopHUP = a.cert.ReloadOnSignal(syscall.SIGHUP)
	}
	a.srv = &http.Server{
		Handler:           hub.RequestLogClient(a.log, a.proxies.SourceAddr, a.guard.Handler(a.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       a.guard.ConnContext,
		ConnState:         a.guard.ConnState,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	ln := a.guard.Listener(a.ln)
	if a.cert != nil {
		// HTTP/1.1 only for now: the guard and the doors are proven on it
		// (WebSocket upgrades need it anyway).
		a.srv.TLSConfig = a.cert.TLSConfig()
		a.srv.TLSConfig.NextProtos = []string{"http/1.1"}
		a.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		ln = tls.NewListener(ln, a.srv.TLSConfig)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

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
		Frames:          map[string]hub.FrameHandler{"takedown": a.takedowns.Frame},
	}))
	api.Handle("POST /v1/takedowns", a.auth.Require(http.HandlerFunc(a.takedowns.Post), auth.RolePolice, auth.RoleModerator))
	api.Handle("GET /v1/takedowns/{correlation_id}", a.auth.Require(http.HandlerFunc(a.takedowns.Get)))
	api.Handle("/v1/session", a.auth.SessionHandler())

	mux := http.NewServeMux()
	mux.Handle("/v1/", auth.CORS(a.cfg.HTTP.AllowedOrigins, a.auth.Throttle(hub.ProblemMux(api))))
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
	mux.Handle("/", static.Handler())
	return a.metrics.http.wrap(mux, api)
}

// observeTakedown feeds the metrics, which exist once the node is up.
func (a *Node) observeTakedown(outcome string, d time.Duration) {
	if a.metrics != nil {
		a.metrics.observe(outcome, d)
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

// RunItemService runs the simulated item service alone, against
// kafka.brokers, until ctx ends (switchboard itemsvc).
func RunItemService(ctx context.Context, cfg config.Config) error {
	log := newLogger(cfg.Log, os.Stderr)
	if cfg.Embedded() {
		return errors.New("itemsvc: set kafka.brokers (--kafka-brokers) to the cluster to serve")
	}
	if err := kafkaconn.Check(ctx, cfg.KafkaConn(), cfg.Kafka.Brokers); err != nil {
		return fmt.Errorf("kafka.brokers: %w", err)
	}
	p, err := producers.New(producers.Config{Brokers: cfg.Kafka.Brokers, Conn: cfg.KafkaConn()}, log)
	if err != nil {
		return err
	}
	defer p.Close()
	svc, err := newItemService(cfg, cfg.Kafka.Brokers, p, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// newItemService builds the simulated item service of the contract.
func newItemService(cfg config.Config, brokers []string, p *producers.Producer, log *slog.Logger) (*itemsvc.Service, error) {
	return itemsvc.New(itemsvc.Config{
		Brokers:           brokers,
		Conn:              cfg.KafkaConn(),
		CommandsTopic:     cfg.Kafka.Topics.Commands,
		EventsTopic:       cfg.Kafka.Topics.Events,
		Latency:           cfg.ItemSvc.Latency,
		Decode:            decodeCommand,
		SessionTimeout:    cfg.Kafka.SessionTimeout,
		HeartbeatInterval: cfg.Kafka.HeartbeatInterval,
		RebalanceTimeout:  cfg.Kafka.RebalanceTimeout,
	}, p, log) // itemsvc.New adds component=itemsvc
}

// decodeCommand is the item service's decoder: consumers.Decode, which
// checks a record as the hub's consumer does, read as an itemsvc.Command.
func decodeCommand(m kafka.Message) (itemsvc.Command, error) {
	ev, err := consumers.Decode(m)
	if err != nil {
		return itemsvc.Command{}, err
	}
	return itemsvc.Command{ID: ev.ID, Source: ev.Source, Type: ev.Type, Subject: ev.Subject, CorrelationID: ev.CorrelationID, JSON: ev.JSON}, nil
}

// newLogger is the node's logger: log.level and log.format, durations
// as strings.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationStrings}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
