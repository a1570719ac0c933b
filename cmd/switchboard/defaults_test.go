package main

import (
	"fmt"
	"slices"
	"testing"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// packageDefaults ties configuration keys to the package constants their
// defaults must equal: the package that uses a value states its default,
// and the configuration must not say another. A key may appear more than
// once when two packages take the same value.
var packageDefaults = []struct {
	key   string
	value any
	name  string
}{
	{"http.max_body_bytes", hub.DefaultMaxBodyBytes, "hub.DefaultMaxBodyBytes"},
	{"http.max_body_bytes", takedown.DefaultMaxBodyBytes, "takedown.DefaultMaxBodyBytes"},
	{"http.body_timeout", hub.DefaultBodyTimeout, "hub.DefaultBodyTimeout"},
	{"http.body_timeout", takedown.DefaultBodyTimeout, "takedown.DefaultBodyTimeout"},

	{"kafka.group_id", consumers.DefaultGroupID, "consumers.DefaultGroupID"},
	{"kafka.topics", defaultTopicRoutes(), "consumers.DefaultRoutes(producers.Default...Topic)"},
	{"kafka.dlq", producers.DefaultDLQTopic, "producers.DefaultDLQTopic"},
	{"kafka.session_timeout", consumers.DefaultSessionTimeout, "consumers.DefaultSessionTimeout"},
	{"kafka.heartbeat_interval", consumers.DefaultHeartbeatInterval, "consumers.DefaultHeartbeatInterval"},
	{"kafka.rebalance_timeout", consumers.DefaultRebalanceTimeout, "consumers.DefaultRebalanceTimeout"},
	{"kafka.dial_timeout", kafkaconn.DefaultDialTimeout, "kafkaconn.DefaultDialTimeout"},

	{"hub.history.size", hub.DefaultHistorySize, "hub.DefaultHistorySize"},
	{"hub.history.ttl", hub.DefaultHistoryTTL, "hub.DefaultHistoryTTL"},
	{"hub.history.max_bytes", int64(hub.DefaultHistoryMaxBytes), "hub.DefaultHistoryMaxBytes"},
	{"hub.client_queue", hub.DefaultClientQueue, "hub.DefaultClientQueue"},
	{"hub.client_queue_bytes", hub.DefaultClientQueueBytes, "hub.DefaultClientQueueBytes"},
	{"hub.max_channels", hub.DefaultMaxChannels, "hub.DefaultMaxChannels"},

	{"sse.heartbeat", hub.DefaultSSEHeartbeat, "hub.DefaultSSEHeartbeat"},
	{"sse.retry", hub.DefaultSSERetry, "hub.DefaultSSERetry"},
	{"ws.ping_interval", hub.DefaultWSPingInterval, "hub.DefaultWSPingInterval"},
	{"ws.max_message_bytes", hub.DefaultWSMaxMessageBytes, "hub.DefaultWSMaxMessageBytes"},
	{"ws.write_timeout", hub.DefaultWSWriteTimeout, "hub.DefaultWSWriteTimeout"},

	{"takedown.timeout", takedown.DefaultTimeout, "takedown.DefaultTimeout"},
	{"takedown.max_records", takedown.DefaultMaxRecords, "takedown.DefaultMaxRecords"},
	{"takedown.max_wait", takedown.DefaultMaxWait, "takedown.DefaultMaxWait"},
	{"takedown.publish_timeout", takedown.DefaultPublishWait, "takedown.DefaultPublishWait"},
	{"takedown.outcome_sources", takedown.DefaultOutcomeSources, "takedown.DefaultOutcomeSources"},

	{"itemsvc.latency", itemsvc.DefaultLatency, "itemsvc.DefaultLatency"},
	{"demo.rate", producers.DefaultDemoRate, "producers.DefaultDemoRate"},

	{"auth.session_ttl", auth.DefaultSessionTTL, "auth.DefaultSessionTTL"},
	{"auth.jwt.jwks_refresh_min", auth.DefaultJWKSRefreshMin, "auth.DefaultJWKSRefreshMin"},
	{"auth.jwt.role_claim", auth.DefaultRoleClaim, "auth.DefaultRoleClaim"},
	{"auth.jwt.channels_claim", auth.DefaultChannelsClaim, "auth.DefaultChannelsClaim"},
	{"auth.jwt.name_claim", auth.DefaultNameClaim, "auth.DefaultNameClaim"},
	{"auth.jwt.leeway", auth.DefaultJWTLeeway, "auth.DefaultJWTLeeway"},

	{"limits.connections", auth.DefaultMaxConnections, "auth.DefaultMaxConnections"},
	{"limits.takedown_rate", auth.DefaultTakedownRate, "auth.DefaultTakedownRate"},
	{"limits.takedown_burst", auth.DefaultTakedownBurst, "auth.DefaultTakedownBurst"},
	{"limits.unauthenticated_connections", hub.DefaultMaxUnauthenticated, "hub.DefaultMaxUnauthenticated"},
	{"limits.auth_failure_rate", auth.DefaultFailureRate, "auth.DefaultFailureRate"},
	{"limits.auth_failure_burst", auth.DefaultFailureBurst, "auth.DefaultFailureBurst"},
	{"limits.auth_failure_sources", auth.DefaultFailureSources, "auth.DefaultFailureSources"},
}

// configOwnedDefaults are the keys whose default only the configuration
// states: values of the node itself (where to listen, the embedded
// broker, logging), and those that are empty, off or decided at load.
var configOwnedDefaults = []string{
	"http.addr", "http.allowed_origins", "http.shutdown_timeout",
	"http.tls.cert_file", "http.tls.key_file", "http.trusted_proxies",
	"kafka.brokers", "kafka.embedded.addr", "kafka.embedded.partitions",
	"kafka.tls.enabled", "kafka.tls.ca_file", "kafka.tls.cert_file", "kafka.tls.key_file",
	"kafka.tls.server_name", "kafka.tls.insecure_skip_verify",
	"kafka.sasl.mechanism", "kafka.sasl.username", "kafka.sasl.password",
	"redis.url", "redis.sentinel.master", "redis.sentinel.addrs", "redis.sentinel.password",
	"redis.cluster.addrs", "redis.cluster.password",
	"redis.tls.enabled", "redis.tls.ca_file", "redis.tls.cert_file", "redis.tls.key_file",
	"takedown.result_ttl",
	"itemsvc.enabled",
	"demo.enabled",
	"commands", // config.DefaultCommands, from the producers' and takedown's constants
	"otel.endpoint", "otel.service_name",
	"auth.principals", "auth.session_secret",
	"auth.jwt.jwks_url", "auth.jwt.public_key_files", "auth.jwt.hmac_secret",
	"auth.jwt.issuer", "auth.jwt.audience", "auth.jwt.algorithms",
	"log.level", "log.format",
}

// defaultTopicRoutes is the consumers' default routing as kafka.topics.
func defaultTopicRoutes() []config.TopicRoute {
	var out []config.TopicRoute
	for _, r := range consumers.DefaultRoutes(producers.DefaultReportsTopic, producers.DefaultCommandsTopic, producers.DefaultEventsTopic) {
		out = append(out, config.TopicRoute{Name: r.Topic, Types: r.Types, Channels: r.Channels})
	}
	return out
}

// TestConfigDefaultsArePackageDefaults: every configuration default that a
// package also states equals that package's constant, and every key is
// either tied to one or named as the configuration's own, so a new key
// cannot bring a second statement of a default unnoticed.
func TestConfigDefaultsArePackageDefaults(t *testing.T) {
	defaults := config.Defaults()
	tied := map[string]bool{}
	for _, d := range packageDefaults {
		tied[d.key] = true
		got, ok := defaults[d.key]
		if !ok {
			t.Errorf("%s: no such configuration key (tied to %s)", d.key, d.name)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(d.value) {
			t.Errorf("%s defaults to %v in config, but %s is %v: config should take %s", d.key, got, d.name, d.value, d.name)
		}
	}
	for _, k := range config.Keys() {
		if !tied[k] && !slices.Contains(configOwnedDefaults, k) {
			t.Errorf("%s: tie its default to the package constant it must equal, or name it as the configuration's own", k)
		}
	}
	for _, k := range configOwnedDefaults {
		if _, ok := defaults[k]; !ok {
			t.Errorf("%s is named as the configuration's own default but is no key", k)
		}
		if tied[k] {
			t.Errorf("%s is both tied to a package constant and named as the configuration's own", k)
		}
	}
}
