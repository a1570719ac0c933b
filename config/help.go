package config

// help is a one-line meaning of each key, the comment above it in
// WriteDefaults' file. docs/configuration.md says more.
var help = map[string]string{
	"http.addr":             "Listen address of the HTTP server (host:port; an empty host listens on every interface).",
	"http.allowed_origins":  "Origins that may make cross-origin requests and open WebSockets; * allows any, without credentials; none: same origin only.",
	"http.max_body_bytes":   "Largest request body, in bytes; a larger one is refused with 413.",
	"http.body_timeout":     "How long a request's body may take to arrive; past it the request is answered 408 and its connection closed.",
	"http.shutdown_timeout": "The longest a graceful shutdown may take; longer than takedown.max_wait.",
	"http.tls.cert_file":    "PEM certificate (chain) of the HTTPS server, with http.tls.key_file; reloaded on SIGHUP. None: plain HTTP.",
	"http.tls.key_file":     "PEM private key of http.tls.cert_file.",
	"http.trusted_proxies":  "CIDRs of the proxies whose X-Forwarded-For and X-Forwarded-Proto are believed; others' are ignored.",

	"kafka.brokers":             "Bootstrap brokers (host:port) of an external Kafka cluster; none starts the embedded broker.",
	"kafka.embedded.addr":       "Listen address of the embedded Kafka-protocol broker (used only without kafka.brokers).",
	"kafka.embedded.partitions": "Partitions of each topic the embedded broker creates.",
	"kafka.group_id":            "Consumer group of the hub's consumer, shared by all nodes.",
	"kafka.session_timeout":     "How long the group coordinator waits for a member's heartbeat before moving its partitions.",
	"kafka.heartbeat_interval":  "How often a group member heartbeats; below kafka.session_timeout (a third of it or less).",
	"kafka.rebalance_timeout":   "How long the coordinator waits for the members to rejoin during a rebalance.",
	"kafka.dial_timeout":        "The longest opening one connection to a broker may take: TCP, TLS and SASL together.",
	"kafka.topics":              "Topics the hub consumes: name, types (only these are routed; none: all), channels (templates with {subject}, {correlationid}, {type}, {source}, {data.<field>}).",
	"kafka.dlq":                 "Dead-letter topic for records that are not valid CloudEvents.",

	"kafka.tls.enabled":              "Connects to the brokers over TLS; the other kafka.tls keys need it. External clusters only.",
	"kafka.tls.ca_file":              "PEM file of the CAs that sign the brokers' certificates; none: the system's.",
	"kafka.tls.cert_file":            "PEM client certificate, for brokers that require one (mTLS); needs kafka.tls.key_file.",
	"kafka.tls.key_file":             "PEM private key of kafka.tls.cert_file.",
	"kafka.tls.server_name":          "Name the brokers' certificates must carry; none: the host of each broker address.",
	"kafka.tls.insecure_skip_verify": "Accepts any broker certificate: anyone on the path can pose as the broker. Test clusters only.",
	"kafka.sasl.mechanism":           "SASL mechanism: plain (over TLS only), scram-sha-256 or scram-sha-512; none: no SASL.",
	"kafka.sasl.username":            "SASL username; needed with kafka.sasl.mechanism.",
	"kafka.sasl.password":            "SASL password; set SWITCHBOARD_KAFKA_SASL_PASSWORD rather than this. Never logged.",

	"redis.url":               "Redis URL of the shared backplane (redis://, rediss://, unix://); none (and no redis.sentinel or redis.cluster): the in-memory backplane, one node.",
	"redis.sentinel.master":   "Name the sentinels know the Redis primary by; with redis.sentinel.addrs, instead of redis.url.",
	"redis.sentinel.addrs":    "Sentinels (host:port) that watch the Redis primary and its replicas.",
	"redis.sentinel.password": "Password of the sentinels and the Redis servers; set SWITCHBOARD_REDIS_SENTINEL_PASSWORD rather than this.",
	"redis.cluster.addrs":     "Some nodes (host:port) of a Redis Cluster, instead of redis.url; the others are discovered.",
	"redis.cluster.password":  "Password of the Redis Cluster's nodes; set SWITCHBOARD_REDIS_CLUSTER_PASSWORD rather than this.",
	"redis.tls.enabled":       "Connects to redis.sentinel or redis.cluster over TLS (redis.url says rediss:// instead).",
	"redis.tls.ca_file":       "PEM file of the CAs that sign the Redis servers' certificates; none: the system's.",
	"redis.tls.cert_file":     "PEM client certificate, for Redis servers that require one; needs redis.tls.key_file.",
	"redis.tls.key_file":      "PEM private key of redis.tls.cert_file.",

	"hub.history.size":       "The most events each channel keeps for resuming.",
	"hub.history.ttl":        "The longest each channel keeps an event for resuming.",
	"hub.history.max_bytes":  "In-memory backplane: the most bytes of history all channels keep together; past it the oldest events leave first.",
	"hub.client_queue":       "The most frames queued for one connection; past it the connection is dropped as a slow consumer.",
	"hub.client_queue_bytes": "The most bytes queued for one connection; past it the connection is dropped as a slow consumer.",
	"hub.max_channels":       "The most channels one WebSocket connection or SSE stream may subscribe to.",

	"sse.heartbeat": "Interval of the comment lines that keep proxies from closing an idle stream.",
	"sse.retry":     "Reconnection delay sent to EventSource in the retry: field.",

	"ws.ping_interval":     "Interval of WebSocket pings; a peer that does not answer within one interval is dropped.",
	"ws.max_message_bytes": "Largest client message, in bytes; a larger one closes the connection with 1009.",
	"ws.write_timeout":     "The longest one write to a WebSocket client may take.",

	"takedown.timeout":         "How long a takedown waits for its outcome by default; at most takedown.max_wait.",
	"takedown.max_wait":        "The longest wait a client may ask for with Prefer: wait=N.",
	"takedown.result_ttl":      "How long a takedown's outcome and Idempotency-Key are kept.",
	"takedown.max_records":     "In-memory backplane: the most takedowns kept; past it the oldest decided ones are forgotten first.",
	"takedown.publish_timeout": "The longest a request waits for Kafka to acknowledge its command before 503.",
	"takedown.outcome_sources": "CloudEvents sources whose outcome events may change a takedown: your item service's.",

	"commands": "Declared synchronous commands, POST /v1/<name> (name, roles, topic, type, key, fields, outcome_topic, outcome_sources, progress, outcomes, timeout); the default declares takedowns.",

	"itemsvc.enabled": "Runs the simulated item service; unset: on with the embedded broker, off with kafka.brokers.",
	"itemsvc.latency": "Delay before the simulated item service answers a command.",

	"demo.enabled": "Generates item.reported and item.posted events for demo items, and routes items.posted unless kafka.topics names it (--demo).",
	"demo.rate":    "Reports (and item posts) per second of the demo generator.",

	"auth.principals":     "The known callers: name, role, token_sha256 (or token), channels; none: development tokens. File only.",
	"auth.session_ttl":    "How long the moderator page's session cookie lasts.",
	"auth.session_secret": "Secret that keys session cookies, the same on every node; set SWITCHBOARD_AUTH_SESSION_SECRET rather than this.",

	"auth.jwt.jwks_url":         "The identity provider's JWKS URL; bearer tokens may then be JWTs it signed.",
	"auth.jwt.jwks_refresh_min": "The shortest time between two JWKS fetches caused by tokens with an unknown kid.",
	"auth.jwt.public_key_files": "PEM public keys (or certificates) that verify JWTs.",
	"auth.jwt.hmac_secret":      "Secret (32 bytes or more) that verifies HS256/384/512 JWTs; set SWITCHBOARD_AUTH_JWT_HMAC_SECRET rather than this.",
	"auth.jwt.issuer":           "The iss a JWT must carry; none: not checked.",
	"auth.jwt.audience":         "The aud a JWT must carry; none: not checked.",
	"auth.jwt.algorithms":       "The alg values accepted; none: those of the configured keys. none is never accepted.",
	"auth.jwt.role_claim":       "The claim holding the role (moderator, partner or police); a dotted name reaches into objects.",
	"auth.jwt.channels_claim":   "The claim holding extra channel grants (a list or a space-separated string).",
	"auth.jwt.name_claim":       "The claim holding the principal's name.",
	"auth.jwt.leeway":           "Clock skew allowed on exp, nbf and iat.",

	"limits.connections":                 "The most open WebSocket and SSE connections of one principal on one node.",
	"limits.takedown_rate":               "Takedown requests per second one principal may make.",
	"limits.takedown_burst":              "The burst allowed above limits.takedown_rate.",
	"limits.unauthenticated_connections": "The most open connections on one node that have not yet carried a valid credential.",
	"limits.auth_failure_rate":           "Failed authentications per second one source address may make before it is refused unchecked (429).",
	"limits.auth_failure_burst":          "The failed authentications one source address may make at once.",
	"limits.auth_failure_sources":        "How many source addresses the failure limit remembers.",

	"otel.endpoint":     "OTLP/HTTP endpoint traces are exported to, like http://collector:4318; none: no traces.",
	"otel.service_name": "Service name of this process in traces.",

	"log.level":  "debug, info, warn or error.",
	"log.format": "text or json (on stderr).",
}

// secretKeys are printed empty by WriteDefaults, whatever their default, so
// the file it writes never holds a secret.
var secretKeys = map[string]bool{
	"auth.session_secret":  true,
	"auth.jwt.hmac_secret": true,
	"kafka.sasl.password":  true,

	"redis.sentinel.password": true,
	"redis.cluster.password":  true,
}
