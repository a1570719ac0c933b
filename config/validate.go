package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard/switchboard/hub/redisbus"
)

// Validate checks ranges, enumerations, addresses and principals. It returns
// every problem found, each a *KeyError naming its key, joined with
// errors.Join; nil when c is usable.
func (c Config) Validate() error {
	var v validator

	v.addr("http.addr", c.HTTP.Addr, true)
	for i, o := range c.HTTP.AllowedOrigins {
		v.origin(fmt.Sprintf("http.allowed_origins[%d]", i), o)
	}
	v.positive("http.max_body_bytes", c.HTTP.MaxBodyBytes)
	v.duration("http.body_timeout", c.HTTP.BodyTimeout)
	v.duration("http.shutdown_timeout", c.HTTP.ShutdownTimeout)
	v.httpTLS(c)

	for i, b := range c.Kafka.Brokers {
		v.addr(fmt.Sprintf("kafka.brokers[%d]", i), b, false)
	}
	v.addr("kafka.embedded.addr", c.Kafka.Embedded.Addr, true)
	v.positive("kafka.embedded.partitions", int64(c.Kafka.Embedded.Partitions))
	v.nonEmpty("kafka.group_id", c.Kafka.GroupID)
	v.duration("kafka.session_timeout", c.Kafka.SessionTimeout)
	v.duration("kafka.heartbeat_interval", c.Kafka.HeartbeatInterval)
	v.duration("kafka.rebalance_timeout", c.Kafka.RebalanceTimeout)
	if c.Kafka.HeartbeatInterval >= c.Kafka.SessionTimeout && c.Kafka.HeartbeatInterval > 0 && c.Kafka.SessionTimeout > 0 {
		v.fail("kafka.heartbeat_interval", "%s must be below kafka.session_timeout %s (a third of it or less)", c.Kafka.HeartbeatInterval, c.Kafka.SessionTimeout)
	}
	v.kafkaConn(c)
	v.topic("kafka.dlq", c.Kafka.DLQ)
	v.routes(c)

	v.redis(c)

	v.positive("hub.history.size", int64(c.Hub.History.Size))
	v.duration("hub.history.ttl", c.Hub.History.TTL)
	v.positive("hub.history.max_bytes", c.Hub.History.MaxBytes)
	v.positive("hub.client_queue", int64(c.Hub.ClientQueue))
	v.positive("hub.client_queue_bytes", int64(c.Hub.ClientQueueBytes))
	v.positive("hub.max_channels", int64(c.Hub.MaxChannels))

	v.duration("sse.heartbeat", c.SSE.Heartbeat)
	v.duration("sse.retry", c.SSE.Retry)

	v.duration("ws.ping_interval", c.WS.PingInterval)
	v.positive("ws.max_message_bytes", c.WS.MaxMessageBytes)
	v.duration("ws.write_timeout", c.WS.WriteTimeout)

	v.duration("takedown.timeout", c.Takedown.Timeout)
	v.duration("takedown.max_wait", c.Takedown.MaxWait)
	v.duration("takedown.result_ttl", c.Takedown.ResultTTL)
	v.positive("takedown.max_records", int64(c.Takedown.MaxRecords))
	v.duration("takedown.publish_timeout", c.Takedown.PublishTimeout)
	if len(c.Takedown.OutcomeSources) == 0 {
		v.fail("takedown.outcome_sources", "must name at least one source: no takedown could ever be decided")
	}
	for i, src := range c.Takedown.OutcomeSources {
		if _, err := url.Parse(src); err != nil || strings.TrimSpace(src) == "" {
			v.fail(fmt.Sprintf("takedown.outcome_sources[%d]", i), "%q is not a URI reference", src)
		}
	}
	if c.Takedown.Timeout > c.Takedown.MaxWait && c.Takedown.MaxWait > 0 {
		v.fail("takedown.timeout", "%s is longer than takedown.max_wait %s", c.Takedown.Timeout, c.Takedown.MaxWait)
	}

	v.commands(c)

	if c.ItemSvc.Latency < 0 {
		v.fail("itemsvc.latency", "must not be negative, got %s", c.ItemSvc.Latency)
	}

	if !(c.Demo.Rate > 0) {
		v.fail("demo.rate", "must be > 0, got %v", c.Demo.Rate)
	}

	v.principals(c.Auth.Principals)
	v.duration("auth.session_ttl", c.Auth.SessionTTL)
	v.authJWT(c)

	v.positive("limits.connections", int64(c.Limits.Connections))
	if !(c.Limits.TakedownRate > 0) {
		v.fail("limits.takedown_rate", "must be > 0, got %v", c.Limits.TakedownRate)
	}
	v.positive("limits.takedown_burst", int64(c.Limits.TakedownBurst))
	v.positive("limits.unauthenticated_connections", int64(c.Limits.UnauthenticatedConnections))
	if !(c.Limits.AuthFailureRate > 0) {
		v.fail("limits.auth_failure_rate", "must be > 0, got %v", c.Limits.AuthFailureRate)
	}
	v.positive("limits.auth_failure_burst", int64(c.Limits.AuthFailureBurst))
	v.positive("limits.auth_failure_sources", int64(c.Limits.AuthFailureSources))

	v.otel(c.OTel)

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")

	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, keyErr(key, format, args...))
}

func (v *validator) positive(key string, n int64) {
	if n <= 0 {
		v.fail(key, "must be > 0, got %d", n)
	}
}

func (v *validator) duration(key string, d time.Duration) {
	if d <= 0 {
		v.fail(key, "must be > 0, got %s", d)
	}
}

func (v *validator) nonEmpty(key, s string) {
	if s == "" {
		v.fail(key, "must not be empty")
	}
}

func (v *validator) oneOf(key, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.fail(key, "%q is not one of %s", s, strings.Join(allowed, ", "))
}

// addr checks host:port; a listen address may leave the host empty and use
// port 0.
func (v *validator) addr(key, s string, listen bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.fail(key, "%q is not host:port", s)
		return
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		v.fail(key, "%q: port %q is not a number from 0 to 65535", s, port)
	case !listen && (host == "" || n == 0):
		v.fail(key, "%q needs a host and a port from 1 to 65535", s)
	}
}

func (v *validator) origin(key, s string) {
	if s == "*" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		v.fail(key, "%q is not an origin like https://example.com or *", s)
	}
}

// redis checks the redis.* keys: the URL's form, the addresses, exactly
// one of redis.url, redis.sentinel.* and redis.cluster.*, TLS settings the
// form takes, and certificate files that load. No message holds a
// password.
func (v *validator) redis(c Config) {
	before := len(v.errs)
	v.redisURL("redis.url", c.Redis.URL)
	for i, a := range c.Redis.Sentinel.Addrs {
		v.addr(fmt.Sprintf("redis.sentinel.addrs[%d]", i), a, false)
	}
	for i, a := range c.Redis.Cluster.Addrs {
		v.addr(fmt.Sprintf("redis.cluster.addrs[%d]", i), a, false)
	}
	if len(v.errs) > before {
		return
	}
	if err := c.RedisConn().Check(); err != nil {
		var oe *redisbus.OptionError
		if errors.As(err, &oe) {
			v.fail(oe.Key, "%s", oe.Reason)
		} else {
			v.fail("redis", "%s", strings.TrimPrefix(err.Error(), "redisbus: "))
		}
	}
}

func (v *validator) redisURL(key, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		v.fail(key, "not a URL") // the error would repeat a password
		return
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			v.fail(key, "needs a host, like redis://localhost:6379/0")
		}
	case "unix":
		if u.Path == "" {
			v.fail(key, "needs a socket path, like unix:///run/redis.sock")
		}
	default:
		v.fail(key, "scheme %q is not redis, rediss or unix", u.Scheme)
	}
}

var topicRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func (v *validator) topic(key, s string) {
	if !topicRe.MatchString(s) || s == "." || s == ".." {
		v.fail(key, "%q is not a Kafka topic name ([a-zA-Z0-9._-], 1 to 249)", s)
	}
}

var channelRe = regexp.MustCompile(`^[a-z0-9._-]{1,64}(:[A-Za-z0-9._~-]{1,128})?$`)

// principals checks names, roles, tokens and channel grants. A grant may use
// "*" as a wildcard.
func (v *validator) principals(ps []Principal) {
	names := map[string]int{}
	for i, p := range ps {
		k := fmt.Sprintf("auth.principals[%d]", i)
		switch j, dup := names[p.Name]; {
		case p.Name == "":
			v.fail(k+".name", "must not be empty")
		case dup:
			v.fail(k+".name", "%q is also auth.principals[%d]", p.Name, j)
		default:
			names[p.Name] = i
		}
		v.oneOf(k+".role", p.Role, RoleModerator, RolePartner, RolePolice)
		switch {
		case p.TokenSHA256 != "" && p.Token != "":
			v.fail(k, "set token_sha256 or token, not both")
		case p.TokenSHA256 == "" && p.Token == "":
			v.fail(k, "needs token_sha256 (or token, for development)")
		case p.TokenSHA256 != "":
			if b, err := hex.DecodeString(p.TokenSHA256); err != nil || len(b) != 32 {
				v.fail(k+".token_sha256", "must be 64 hex characters, the SHA-256 of the token")
			}
		}
		for j, ch := range p.Channels {
			if !channelRe.MatchString(strings.ReplaceAll(ch, "*", "x")) {
				v.fail(fmt.Sprintf("%s.channels[%d]", k, j), "%q is not a channel or pattern like item:*", ch)
			}
		}
	}
}
