// Package config loads Switchboard's configuration from defaults, a YAML file,
// SWITCHBOARD_* environment variables and command-line flags, in increasing
// order of precedence, and hands it out as plain structs.
//
// It is the only package that imports viper or knows configuration keys; every
// other package takes its own plain Config and is wired up in cmd.
package config

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// Config is the whole configuration of one Switchboard process. The
// mapstructure tags are the dotted configuration keys.
type Config struct {
	HTTP     HTTP     `mapstructure:"http"`
	Kafka    Kafka    `mapstructure:"kafka"`
	Redis    Redis    `mapstructure:"redis"`
	Hub      Hub      `mapstructure:"hub"`
	SSE      SSE      `mapstructure:"sse"`
	WS       WS       `mapstructure:"ws"`
	Takedown Takedown `mapstructure:"takedown"`
	// Commands are the declared synchronous commands (SPEC §5.1).
	Commands []Command `mapstructure:"commands"`
	ItemSvc  ItemSvc   `mapstructure:"itemsvc"`
	Demo     Demo      `mapstructure:"demo"`
	Auth     Auth      `mapstructure:"auth"`
	Limits   Limits    `mapstructure:"limits"`
	OTel     OTel      `mapstructure:"otel"`
	Log      Log       `mapstructure:"log"`
}

// HTTP configures the HTTP server (keys http.*).
type HTTP struct {
	// Addr is the listen address, e.g. ":8080".
	Addr string `mapstructure:"addr"`
	// AllowedOrigins are the origins allowed for CORS and WebSocket; none
	// means same origin only. "*" allows any origin.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
	// BodyTimeout bounds how long a request's body may take to arrive;
	// past it the request is answered 408 and its connection closed.
	BodyTimeout time.Duration `mapstructure:"body_timeout"`
	// ShutdownTimeout bounds a graceful shutdown; above takedown.max_wait so
	// held takedowns answer or time out first.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// TLS serves HTTPS with this certificate, reloaded on SIGHUP.
	TLS HTTPTLS `mapstructure:"tls"`
	// TrustedProxies are the CIDRs of the proxies whose X-Forwarded-For
	// and X-Forwarded-Proto are believed.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
}

// Kafka configures the Kafka connection (keys kafka.*).
type Kafka struct {
	// Brokers of an external cluster; none means start the embedded broker.
	Brokers []string `mapstructure:"brokers"`
	// Embedded configures the embedded broker, used only without Brokers.
	Embedded KafkaEmbedded `mapstructure:"embedded"`
	// GroupID is the consumer group shared by all nodes.
	GroupID string `mapstructure:"group_id"`
	// Topics are the consumed topics and the channels their events are
	// fanned out to (SPEC §2.1).
	Topics []TopicRoute `mapstructure:"topics"`
	// DLQ is the dead-letter topic of records that are not valid
	// CloudEvents.
	DLQ string `mapstructure:"dlq"`
	// SessionTimeout is how long the group coordinator waits without a
	// heartbeat before it drops a member (a node that died, or lost its
	// connection and rejoined) and moves its partitions. It applies to the
	// hub's consumer and the simulated item service.
	SessionTimeout time.Duration `mapstructure:"session_timeout"`
	// HeartbeatInterval is how often a group member heartbeats; below
	// SessionTimeout.
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	// RebalanceTimeout is how long the coordinator waits for the members
	// to rejoin during a rebalance.
	RebalanceTimeout time.Duration `mapstructure:"rebalance_timeout"`
	// TLS configures TLS to the brokers of an external cluster.
	TLS KafkaTLS `mapstructure:"tls"`
	// SASL configures SASL authentication to them.
	SASL KafkaSASL `mapstructure:"sasl"`
	// DialTimeout bounds opening one connection to a broker: TCP, TLS and
	// SASL together.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
}

// KafkaEmbedded configures the embedded Kafka-protocol broker (keys
// kafka.embedded.*).
type KafkaEmbedded struct {
	// Addr is where real Kafka clients reach it, e.g. "127.0.0.1:9092".
	Addr string `mapstructure:"addr"`
	// Partitions is the partition count of each topic it creates.
	Partitions int `mapstructure:"partitions"`
}

// Redis configures the Redis backplane (keys redis.*): one of URL,
// Sentinel or Cluster; none means the in-memory backplane.
type Redis struct {
	// URL such as "redis://host:6379/0" names one server.
	URL string `mapstructure:"url"`
	// Sentinel names a primary with replicas watched by Sentinel.
	Sentinel RedisSentinel `mapstructure:"sentinel"`
	// Cluster names a Redis Cluster.
	Cluster RedisCluster `mapstructure:"cluster"`
	// TLS configures TLS for Sentinel and Cluster, and the files of a
	// rediss:// URL.
	TLS RedisTLS `mapstructure:"tls"`
}

// RedisSentinel names a Sentinel-watched primary (keys redis.sentinel.*).
type RedisSentinel struct {
	// Master is the name the sentinels know the primary by.
	Master string `mapstructure:"master"`
	// Addrs are the sentinels, host:port.
	Addrs []string `mapstructure:"addrs"`
	// Password authenticates to the sentinels and the servers. String and
	// GoString leave it out.
	Password string `mapstructure:"password"`
}

// String describes s without its password.
func (s RedisSentinel) String() string {
	return fmt.Sprintf("{Master:%s Addrs:%v Password:%s}", s.Master, s.Addrs, redacted(s.Password))
}

// GoString is String, so %#v leaves the password out too.
func (s RedisSentinel) GoString() string { return "config.RedisSentinel" + s.String() }

// RedisCluster names a Redis Cluster (keys redis.cluster.*).
type RedisCluster struct {
	// Addrs are some of its nodes, host:port; the others are discovered.
	Addrs []string `mapstructure:"addrs"`
	// Password authenticates to every node. String and GoString leave it
	// out.
	Password string `mapstructure:"password"`
}

// String describes c without its password.
func (c RedisCluster) String() string {
	return fmt.Sprintf("{Addrs:%v Password:%s}", c.Addrs, redacted(c.Password))
}

// GoString is String, so %#v leaves the password out too.
func (c RedisCluster) GoString() string { return "config.RedisCluster" + c.String() }

func redacted(pw string) string {
	if pw == "" {
		return ""
	}
	return "[redacted]"
}

// RedisTLS configures TLS to Redis (keys redis.tls.*).
type RedisTLS struct {
	// Enabled turns TLS on for redis.sentinel and redis.cluster (a
	// redis.url turns it on with rediss://).
	Enabled bool `mapstructure:"enabled"`
	// CAFile is a PEM file of the CAs that sign the servers' certificates;
	// empty means the system's.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// RedisConn returns the Redis the backplane, the outcome store and the
// session revocations use: the redis.* keys, for redisbus.NewClient,
// redisbus.Connect and redisbus.Dial. Its Configured is false for the
// in-memory backplane.
func (c Config) RedisConn() redisbus.Options {
	r := c.Redis
	return redisbus.Options{
		URL:              r.URL,
		SentinelMaster:   r.Sentinel.Master,
		SentinelAddrs:    r.Sentinel.Addrs,
		SentinelPassword: r.Sentinel.Password,
		ClusterAddrs:     r.Cluster.Addrs,
		ClusterPassword:  r.Cluster.Password,
		TLS:              redisbus.TLS{Enabled: r.TLS.Enabled, CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile},
	}
}

// Hub configures the hub (keys hub.*).
type Hub struct {
	History History `mapstructure:"history"`
	// ClientQueue bounds each subscriber's queue.
	ClientQueue int `mapstructure:"client_queue"`
	// ClientQueueBytes bounds the bytes of each subscriber's queue.
	ClientQueueBytes int `mapstructure:"client_queue_bytes"`
	// MaxChannels bounds the channels of one connection.
	MaxChannels int `mapstructure:"max_channels"`
}

// History bounds each channel's history (keys hub.history.*).
type History struct {
	Size int           `mapstructure:"size"`
	TTL  time.Duration `mapstructure:"ttl"`
	// MaxBytes bounds the history of all channels together on the memory
	// backplane (Redis bounds its own: maxmemory).
	MaxBytes int64 `mapstructure:"max_bytes"`
}

// SSE configures Server-Sent Events (keys sse.*).
type SSE struct {
	// Heartbeat is the interval of comment lines that keep proxies open.
	Heartbeat time.Duration `mapstructure:"heartbeat"`
	// Retry is the reconnection delay sent to clients.
	Retry time.Duration `mapstructure:"retry"`
}

// WS configures WebSockets (keys ws.*).
type WS struct {
	PingInterval    time.Duration `mapstructure:"ping_interval"`
	MaxMessageBytes int64         `mapstructure:"max_message_bytes"`
	WriteTimeout    time.Duration `mapstructure:"write_timeout"`
}

// Takedown configures takedown requests (keys takedown.*).
type Takedown struct {
	// Timeout is how long a synchronous request waits by default.
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxWait is the longest wait a request may ask for.
	MaxWait time.Duration `mapstructure:"max_wait"`
	// ResultTTL is how long an outcome is kept for late readers.
	ResultTTL time.Duration `mapstructure:"result_ttl"`
	// MaxRecords bounds the takedowns the in-memory outcome store keeps
	// (Redis bounds its own: maxmemory).
	MaxRecords int `mapstructure:"max_records"`
	// PublishTimeout bounds publishing a command; past it the request is
	// answered 503.
	PublishTimeout time.Duration `mapstructure:"publish_timeout"`
	// OutcomeSources are the CloudEvents sources whose outcome events may
	// change a takedown (read from the takedowns command's outcome_topic
	// only).
	OutcomeSources []string `mapstructure:"outcome_sources"`
}

// ItemSvc configures the simulated item service (keys itemsvc.*).
type ItemSvc struct {
	// Enabled runs the simulated item service. When itemsvc.enabled is not
	// set in any source, Load sets it to Embedded(): on with the embedded
	// broker, off with an external cluster.
	Enabled bool `mapstructure:"enabled"`
	// Latency is added before each answer.
	Latency time.Duration `mapstructure:"latency"`
}

// Demo configures the generator of item.reported and item.posted events
// (keys demo.*).
type Demo struct {
	// Enabled runs the generator, and routes DemoPostsTopic unless
	// kafka.topics names it (see TopicRoutes).
	Enabled bool `mapstructure:"enabled"`
	// Rate is in reports (and item posts) per second.
	Rate float64 `mapstructure:"rate"`
}

// Auth configures who may connect (keys auth.*).
type Auth struct {
	// Principals are the known callers; none means development tokens are
	// made at start.
	Principals []Principal `mapstructure:"principals"`
	// SessionTTL is how long the browser page's session cookie lasts.
	SessionTTL time.Duration `mapstructure:"session_ttl"`
	// SessionSecret keys session cookies (with the principal's token
	// hash); every node needs the same one. Keep it out of the file, e.g.
	// SWITCHBOARD_AUTH_SESSION_SECRET.
	SessionSecret string `mapstructure:"session_secret"`
	// JWT lets bearer tokens be JWTs of an identity provider.
	JWT JWT `mapstructure:"jwt"`
}

// Limits bounds what one principal, one source address or the
// unauthenticated may use (keys limits.*).
type Limits struct {
	// Connections bounds one principal's open WebSocket and SSE
	// connections on one node.
	Connections int `mapstructure:"connections"`
	// TakedownRate is the takedown requests one principal may make per
	// second, with bursts of TakedownBurst.
	TakedownRate  float64 `mapstructure:"takedown_rate"`
	TakedownBurst int     `mapstructure:"takedown_burst"`
	// UnauthenticatedConnections bounds the open connections on which no
	// request has yet carried a valid credential, on one node.
	UnauthenticatedConnections int `mapstructure:"unauthenticated_connections"`
	// AuthFailureRate is the failed authentications one source address
	// may make per second, with bursts of AuthFailureBurst; past them its
	// credentials are refused unchecked (429).
	AuthFailureRate  float64 `mapstructure:"auth_failure_rate"`
	AuthFailureBurst int     `mapstructure:"auth_failure_burst"`
	// AuthFailureSources bounds how many source addresses the failure
	// limit remembers.
	AuthFailureSources int `mapstructure:"auth_failure_sources"`
}

// Principal roles.
const (
	RoleModerator = "moderator"
	RolePartner   = "partner"
	RolePolice    = "police"
)

// Principal is one caller and its bearer token. Exactly one of TokenSHA256
// and Token is set.
type Principal struct {
	Name string `mapstructure:"name"`
	// Role is RoleModerator, RolePartner or RolePolice.
	Role string `mapstructure:"role"`
	// TokenSHA256 is the lowercase or uppercase hex SHA-256 of the token.
	TokenSHA256 string `mapstructure:"token_sha256"`
	// Token is a plain token, for development only.
	Token string `mapstructure:"token"`
	// Channels are grants beyond the role's own, e.g. "item:*".
	Channels []string `mapstructure:"channels"`
}

// String describes p without its token, so a principal can be logged.
func (p Principal) String() string {
	return fmt.Sprintf("{name:%s role:%s channels:%v}", p.Name, p.Role, p.Channels)
}

// Log configures logging (keys log.*).
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json.
	Format string `mapstructure:"format"`
}

// Embedded reports whether Switchboard starts its embedded broker, which it
// does when no kafka.brokers are configured.
func (c Config) Embedded() bool { return len(c.Kafka.Brokers) == 0 }

// defaultRoutes is the contract's routing over the default topics.
var defaultRoutes = consumers.DefaultRoutes(producers.DefaultReportsTopic, producers.DefaultCommandsTopic, producers.DefaultEventsTopic)

// defaults holds every key with its default: the packages' own constants
// wherever a package has one. A nil default means "decided in
// Load" (itemsvc.enabled). Every key needs an entry here, or viper never looks
// it up in the environment.
var defaults = map[string]any{
	"http.addr":             ":8080",
	"http.allowed_origins":  []string{},
	"http.max_body_bytes":   hub.DefaultMaxBodyBytes,
	"http.body_timeout":     hub.DefaultBodyTimeout,
	"http.shutdown_timeout": 60 * time.Second,
	"http.tls.cert_file":    "",
	"http.tls.key_file":     "",
	"http.trusted_proxies":  []string{},

	"kafka.brokers":             []string{},
	"kafka.embedded.addr":       "127.0.0.1:9092",
	"kafka.embedded.partitions": 3,
	"kafka.group_id":            consumers.DefaultGroupID,
	"kafka.topics":              DefaultTopicRoutes(),
	"kafka.dlq":                 producers.DefaultDLQTopic,
	"kafka.session_timeout":     consumers.DefaultSessionTimeout,
	"kafka.heartbeat_interval":  consumers.DefaultHeartbeatInterval,
	"kafka.rebalance_timeout":   consumers.DefaultRebalanceTimeout,
	"kafka.dial_timeout":        kafkaconn.DefaultDialTimeout,

	"kafka.tls.enabled":              false,
	"kafka.tls.ca_file":              "",
	"kafka.tls.cert_file":            "",
	"kafka.tls.key_file":             "",
	"kafka.tls.server_name":          "",
	"kafka.tls.insecure_skip_verify": false,
	"kafka.sasl.mechanism":           "",
	"kafka.sasl.username":            "",
	"kafka.sasl.password":            "",

	"redis.url":               "",
	"redis.sentinel.master":   "",
	"redis.sentinel.addrs":    []string{},
	"redis.sentinel.password": "",
	"redis.cluster.addrs":     []string{},
	"redis.cluster.password":  "",
	"redis.tls.enabled":       false,
	"redis.tls.ca_file":       "",
	"redis.tls.cert_file":     "",
	"redis.tls.key_file":      "",

	"hub.history.size":       hub.DefaultHistorySize,
	"hub.history.ttl":        hub.DefaultHistoryTTL,
	"hub.history.max_bytes":  hub.DefaultHistoryMaxBytes,
	"hub.client_queue":       hub.DefaultClientQueue,
	"hub.client_queue_bytes": hub.DefaultClientQueueBytes,
	"hub.max_channels":       hub.DefaultMaxChannels,

	"sse.heartbeat": hub.DefaultSSEHeartbeat,
	"sse.retry":     hub.DefaultSSERetry,

	"ws.ping_interval":     hub.DefaultWSPingInterval,
	"ws.max_message_bytes": hub.DefaultWSMaxMessageBytes,
	"ws.write_timeout":     hub.DefaultWSWriteTimeout,

	"takedown.timeout":         takedown.DefaultTimeout,
	"takedown.max_wait":        takedown.DefaultMaxWait,
	"takedown.result_ttl":      24 * time.Hour,
	"takedown.max_records":     takedown.DefaultMaxRecords,
	"takedown.publish_timeout": takedown.DefaultPublishWait,
	"takedown.outcome_sources": takedown.DefaultOutcomeSources,

	"commands": DefaultCommands(),

	"itemsvc.enabled": nil,
	"itemsvc.latency": itemsvc.DefaultLatency,

	"demo.enabled": false,
	"demo.rate":    producers.DefaultDemoRate,

	"auth.principals":     []any{},
	"auth.session_ttl":    auth.DefaultSessionTTL,
	"auth.session_secret": "",

	"auth.jwt.jwks_url":         "",
	"auth.jwt.jwks_refresh_min": auth.DefaultJWKSRefreshMin,
	"auth.jwt.public_key_files": []string{},
	"auth.jwt.hmac_secret":      "",
	"auth.jwt.issuer":           "",
	"auth.jwt.audience":         "",
	"auth.jwt.algorithms":       []string{},
	"auth.jwt.role_claim":       auth.DefaultRoleClaim,
	"auth.jwt.channels_claim":   auth.DefaultChannelsClaim,
	"auth.jwt.name_claim":       auth.DefaultNameClaim,
	"auth.jwt.leeway":           auth.DefaultJWTLeeway,

	"limits.connections":                 auth.DefaultMaxConnections,
	"limits.takedown_rate":               auth.DefaultTakedownRate,
	"limits.takedown_burst":              auth.DefaultTakedownBurst,
	"limits.unauthenticated_connections": hub.DefaultMaxUnauthenticated,
	"limits.auth_failure_rate":           auth.DefaultFailureRate,
	"limits.auth_failure_burst":          auth.DefaultFailureBurst,
	"limits.auth_failure_sources":        auth.DefaultFailureSources,

	"otel.endpoint":     "",
	"otel.service_name": DefaultServiceName,

	"log.level":  "info",
	"log.format": "text",
}

// Keys returns every dotted configuration key, sorted. Each has a default
// (see Defaults).
func Keys() []string {
	return slices.Sorted(maps.Keys(defaults))
}

// Defaults returns every key's default value, for documentation. The value
// of itemsvc.enabled is nil: it follows Embedded unless set.
func Defaults() map[string]any {
	out := make(map[string]any, len(defaults))
	for k, v := range defaults {
		out[k] = cloneDefault(v)
	}
	return out
}

// cloneDefault returns a copy of a default that shares no slice or map
// with it, so no caller can change the defaults.
func cloneDefault(v any) any {
	switch d := v.(type) {
	case []string:
		return slices.Clone(d)
	case []TopicRoute:
		return cloneRoutes(d)
	case []Command:
		return cloneCommands(d)
	}
	return v
}
