// Package node builds a Switchboard node from its configuration: the
// embedded broker or the Kafka connection, the producer, the backplane,
// the hub, the consumer, the takedown adapter, the simulated item
// service, authentication, and the HTTP server with its routes, health
// checks and metrics. The command's main parses flags and configuration
// and calls Run.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// Run starts a node with cfg, logging to stderr, prints where to find it
// on out, and runs until ctx ends; then it shuts down gracefully, within
// http.shutdown_timeout.
func Run(ctx context.Context, cfg config.Config, out io.Writer) error {
	log := newLogger(cfg.Log, os.Stderr)
	stopTracing, err := startTracing(ctx, cfg, log)
	if err != nil {
		return logged(log, err)
	}
	defer stopTracing()
	a, err := Start(ctx, cfg, log)
	if err != nil {
		return logged(log, err)
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

// LoggedError is an error that Run or RunItemService has already written to
// the node's log (in its format, JSON included); the command line only exits
// with status 1 after it.
type LoggedError struct{ Err error }

func (e *LoggedError) Error() string { return e.Err.Error() }
func (e *LoggedError) Unwrap() error { return e.Err }

// logged writes why the node could not start to its log and returns it as
// a LoggedError.
func logged(log *slog.Logger, err error) error {
	log.Error("switchboard could not start", "err", err)
	return &LoggedError{Err: err}
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
	stats     *reportStats     // reports per minute and by reason, for the page
	itemsvc   *itemsvc.Service // nil unless itemsvc.enabled
	store     takedownStore
	recorder  *takedown.Recorder
	takedowns *takedown.Adapter // every declared command, the takedown built in
	// commands are the declared commands (SPEC §5.1); extraCommands
	// are declared by an Option.
	commands      []config.Command
	extraCommands []config.Command
	auth          *auth.Auth
	// revocations is the list of signed-out sessions auth checks.
	revocations auth.Revocations
	devTokens   map[auth.Role]string
	metrics     *metrics
	backplane   string
	guard       *hub.HTTPGuard
	cert        *auth.Certificate // nil without http.tls.cert_file
	proxies     *auth.TrustedProxies
	stopHUP     func() // stops reloading cert on SIGHUP
	srv         *http.Server
	ln          net.Listener
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
	a.commands = a.declaredCommands()
	cmds, err := compileCommands(a.commands)
	if err != nil {
		return nil, err
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
	commandsTopic, outcomesTopic := cfg.TakedownTopics()
	trust := takedown.Trust{Topic: outcomesTopic, Sources: cfg.Takedown.OutcomeSources}
	a.recorder = &takedown.Recorder{Store: a.store, Next: a.hub, Trust: trust, Commands: cmds}
	a.consumer, err = consumers.New(consumers.Config{
		Brokers:           brokers,
		Conn:              cfg.KafkaConn(),
		GroupID:           cfg.Kafka.GroupID,
		DLQTopic:          cfg.Kafka.DLQ,
		SessionTimeout:    cfg.Kafka.SessionTimeout,
		HeartbeatInterval: cfg.Kafka.HeartbeatInterval,
		RebalanceTimeout:  cfg.Kafka.RebalanceTimeout,
		Routes:            commandRoutes(cfg.Routes(), cmds),
	}, a.recorder, a.producer, log)
	if err != nil {
		return nil, err
	}
	a.takedowns, err = takedown.New(takedown.Config{
		Commands:      cmds,
		CommandsTopic: commandsTopic,
		Timeout:       cfg.Takedown.Timeout,
		MaxWait:       cfg.Takedown.MaxWait,
		MaxBodyBytes:  cfg.HTTP.MaxBodyBytes,
		PublishWait:   cfg.Takedown.PublishTimeout,
		Trust:         trust,
		Observe:       a.observeCommand,
	}, a.hub, a.store, a.producer, a.auth, log)
	if err != nil {
		return nil, err
	}
	// The requests this node holds hear of an outcome its consumer stored
	// at once, not after its corr: event's trip through the backplane.
	a.recorder.Wake = a.takedowns
	// The moderator page's chart counts the reports channel, following it
	// before the consumer runs.
	a.stats = newReportStats(a.hub, "reports", log)
	if err := a.stats.follow(ctx); err != nil {
		log.Warn("report stats: cannot follow yet", "err", err)
	}
	a.goRun("report stats", a.stats.Run, bg)
	a.goRun("consumer", a.consumer.Run, bg)
	a.lag = &lagSampler{lag: a.consumer.Lag, interval: lagSampleInterval, log: log}
	for _, o := range a.lagOpts {
		o(a.lag)
	}
	a.goRun("lag sampler", a.lag.Run, bg)
	a.goRun("takedown sweep", a.takedowns.Run, bg)
	if w, ok := a.revocations.(auth.SignOuts); ok {
		a.goRun("sign-outs", func(ctx context.Context) error {
			return w.WatchSignOuts(ctx, a.endSession, func() { a.resyncSignOuts(ctx) })
		}, bg)
	}
	if cfg.ItemSvc.Enabled {
		a.itemsvc, err = itemServiceFor(cfg, restoreCommand(cmds), brokers, a.producer, log)
		if err != nil {
			return nil, err
		}
		a.goRun("itemsvc", a.itemsvc.Run, bg)
	}
	if cfg.Demo.Enabled {
		a.goRun("demo", newDemo(cfg, a.producer, log).Run, bg)
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
			if a.takedowns != nil {
				// The held requests, in their handlers or handed off
				// from net/http (which srv.Shutdown does not wait for),
				// are answered while the consumers run; past the
				// deadline they are dropped, as the process's exit
				// would.
				_ = a.takedowns.WaitHeld(ctx)
				a.takedowns.DropHeld()
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
		if a.err != nil {
			a.log.Warn("switchboard stopped", "err", a.err)
		} else {
			a.log.Info("switchboard stopped")
		}
	})
	return a.err
}
