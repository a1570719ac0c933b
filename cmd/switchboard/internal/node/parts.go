package node

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/takedown"
)

// takedownStore is the outcome store, which also tells auth who owns a
// takedown's corr: channel.
type takedownStore interface {
	takedown.Store
	auth.Owners
}

// startBackplane picks the backplane and the outcome store: Redis when one
// of redis.url, redis.sentinel.* or redis.cluster.addrs is set (shared by
// every node), memory otherwise. The outcome store (and, in startAuth, the
// session revocations) run on the bus's client.
func (a *Node) startBackplane(ctx context.Context) error {
	h := a.cfg.Hub.History
	rc := a.cfg.RedisConn()
	if !rc.Configured() {
		a.bp = hub.NewMemory(hub.MemoryConfig{HistorySize: h.Size, HistoryTTL: h.TTL, MaxBytes: h.MaxBytes})
		a.store = takedown.NewMemoryStore(a.cfg.Takedown.ResultTTL, a.cfg.Takedown.MaxRecords)
		a.backplane = "memory"
		return nil
	}
	bus, err := redisbus.Dial(ctx, rc, redisbus.Config{HistorySize: h.Size, HistoryTTL: h.TTL, Prefix: a.redisPrefix}, a.log.With("component", "redis"))
	if err != nil {
		return fmt.Errorf("redis.%s: %w", rc.Form(), err)
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
	a.revocations = revoked
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
	topics := a.cfg.Topics()
	for _, topic := range commandTopics(a.commands) {
		if !slices.Contains(topics, topic) {
			topics = append(topics, topic)
		}
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(p),
		kfake.ListenFn(func(string, string) (net.Listener, error) { return ln, nil }),
		kfake.SeedTopics(int32(a.cfg.Kafka.Embedded.Partitions), topics...),
	)
	if err != nil {
		ln.Close()
		return fmt.Errorf("embedded broker: %w", err)
	}
	a.broker = c
	a.kafkaAddr = ln.Addr().String()
	a.log.Info("embedded Kafka-protocol broker listening", "addr", a.kafkaAddr,
		"topics", topics, "partitions", a.cfg.Kafka.Embedded.Partitions)
	return nil
}

// endSession ends this node's WebSocket and SSE connections of a session
// signed out on any node.
func (a *Node) endSession(id string) {
	if n := a.hub.EndSession(id); n > 0 {
		a.log.Info("ended the connections of a signed-out session", "connections", n)
	}
}

// resyncSignOuts ends the connections of every session of this node that
// was signed out while the node may not have heard of it (its watch of the
// sign-outs was down). A session that cannot be checked now is left to
// the next resync, or to its expiry.
func (a *Node) resyncSignOuts(ctx context.Context) {
	for _, id := range a.hub.Sessions() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		revoked, err := a.revocations.Revoked(rctx, id)
		cancel()
		if err != nil {
			a.log.Warn("could not check a session against the sign-outs", "err", err)
			continue
		}
		if revoked {
			a.endSession(id)
		}
	}
}
