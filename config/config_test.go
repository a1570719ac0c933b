package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// clearEnv unsets every SWITCHBOARD_* variable for the test, so the
// developer's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "") // restores the old value on cleanup
			os.Unsetenv(name)
		}
	}
}

func writeFile(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func parseFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("switchboard", pflag.ContinueOnError)
	BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func wantDefaults() Config {
	return Config{
		HTTP: HTTP{
			Addr:            ":8080",
			AllowedOrigins:  []string{},
			MaxBodyBytes:    65536,
			BodyTimeout:     10 * time.Second,
			ShutdownTimeout: 60 * time.Second,
			TrustedProxies:  []string{},
		},
		Kafka: Kafka{
			Brokers:  []string{},
			Embedded: KafkaEmbedded{Addr: "127.0.0.1:9092", Partitions: 3},
			GroupID:  "switchboard",
			Topics: []TopicRoute{
				{Name: "items.reported", Channels: []string{"reports", "item:{subject}", "corr:{correlationid}"}},
				{Name: "takedown.commands", Channels: []string{"takedowns", "item:{subject}", "corr:{correlationid}"}},
				{Name: "takedown.events", Channels: []string{"takedowns", "item:{subject}", "corr:{correlationid}"}},
			},
			DLQ:               "switchboard.dlq",
			SessionTimeout:    6 * time.Second,
			HeartbeatInterval: time.Second,
			RebalanceTimeout:  10 * time.Second,
			DialTimeout:       10 * time.Second,
		},
		Redis: Redis{Sentinel: RedisSentinel{Addrs: []string{}}, Cluster: RedisCluster{Addrs: []string{}}},
		Hub: Hub{
			History:          History{Size: 1000, TTL: time.Hour, MaxBytes: 256 << 20},
			ClientQueue:      1024,
			ClientQueueBytes: 1 << 20,
			MaxChannels:      64,
		},
		SSE:      SSE{Heartbeat: 15 * time.Second, Retry: 3 * time.Second},
		WS:       WS{PingInterval: 25 * time.Second, MaxMessageBytes: 65536, WriteTimeout: 10 * time.Second},
		Takedown: Takedown{Timeout: 10 * time.Second, MaxWait: 55 * time.Second, ResultTTL: 24 * time.Hour, MaxRecords: 250_000, PublishTimeout: 2 * time.Second, OutcomeSources: []string{"/switchboard/itemsvc"}},
		Commands: DefaultCommands(),
		ItemSvc:  ItemSvc{Enabled: true, Latency: 50 * time.Millisecond},
		Demo:     Demo{Enabled: false, Rate: 3},
		Auth: Auth{Principals: []Principal{}, SessionTTL: 12 * time.Hour, JWT: JWT{
			JWKSRefreshMin: 5 * time.Minute, PublicKeyFiles: []string{}, Algorithms: []string{},
			RoleClaim: "role", ChannelsClaim: "channels", NameClaim: "sub", Leeway: 30 * time.Second}},
		Limits: Limits{Connections: 100, TakedownRate: 5, TakedownBurst: 10, UnauthenticatedConnections: 1024,
			AuthFailureRate: 10, AuthFailureBurst: 20, AuthFailureSources: 10000},
		OTel: OTel{ServiceName: "switchboard"},
		Log:  Log{Level: "info", Format: "text"},
	}
}

func TestLoad(t *testing.T) {
	const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct {
		name  string
		yaml  string            // file contents; no file when empty
		env   map[string]string // SWITCHBOARD_* variables
		flags []string          // command-line arguments
		want  func(c *Config)   // changes from wantDefaults
	}{
		{
			name: "defaults",
			want: func(*Config) {},
		},
		{
			name: "file values",
			yaml: `
http:
  addr: "127.0.0.1:9000"
  allowed_origins: ["https://mod.example.com"]
kafka:
  brokers: ["k1:9092", "k2:9092"]
  dlq: my.dlq
hub:
  history:
    size: 50
    ttl: 90s
sse:
  heartbeat: 5s
demo:
  enabled: true
  rate: 0.5
log:
  level: debug
  format: json
`,
			want: func(c *Config) {
				c.HTTP.Addr = "127.0.0.1:9000"
				c.HTTP.AllowedOrigins = []string{"https://mod.example.com"}
				c.Kafka.Brokers = []string{"k1:9092", "k2:9092"}
				c.Kafka.DLQ = "my.dlq"
				c.Hub.History = History{Size: 50, TTL: 90 * time.Second, MaxBytes: 256 << 20}
				c.SSE.Heartbeat = 5 * time.Second
				c.Demo = Demo{Enabled: true, Rate: 0.5}
				c.Log = Log{Level: "debug", Format: "json"}
				c.ItemSvc.Enabled = false // external brokers
			},
		},
		{
			name: "env only, without a file",
			env: map[string]string{
				"SWITCHBOARD_HTTP_ADDR":           ":7000",
				"SWITCHBOARD_HUB_HISTORY_TTL":     "2m",
				"SWITCHBOARD_HUB_HISTORY_SIZE":    "10",
				"SWITCHBOARD_HUB_CLIENT_QUEUE":    "7",
				"SWITCHBOARD_DEMO_ENABLED":        "true",
				"SWITCHBOARD_DEMO_RATE":           "1.5",
				"SWITCHBOARD_HTTP_MAX_BODY_BYTES": "100",
			},
			want: func(c *Config) {
				c.HTTP.Addr = ":7000"
				c.HTTP.MaxBodyBytes = 100
				c.Hub.History = History{Size: 10, TTL: 2 * time.Minute, MaxBytes: 256 << 20}
				c.Hub.ClientQueue = 7
				c.Demo = Demo{Enabled: true, Rate: 1.5}
			},
		},
		{
			name: "env overrides file",
			yaml: "http:\n  addr: \":9000\"\nhub:\n  history:\n    ttl: 1m\n",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY_TTL": "3m"},
			want: func(c *Config) {
				c.HTTP.Addr = ":9000"
				c.Hub.History.TTL = 3 * time.Minute
			},
		},
		{
			name:  "flag overrides env and file",
			yaml:  "http:\n  addr: \":9000\"\nlog:\n  level: warn\n",
			env:   map[string]string{"SWITCHBOARD_HTTP_ADDR": ":9001", "SWITCHBOARD_LOG_FORMAT": "json"},
			flags: []string{"--http-addr", ":9002", "--demo"},
			want: func(c *Config) {
				c.HTTP.Addr = ":9002"
				c.Log = Log{Level: "warn", Format: "json"}
				c.Demo.Enabled = true
			},
		},
		{
			name:  "unset flags keep file and env",
			yaml:  "log:\n  level: warn\n",
			env:   map[string]string{"SWITCHBOARD_HTTP_ADDR": ":9001"},
			flags: []string{"--demo=false"},
			want: func(c *Config) {
				c.HTTP.Addr = ":9001"
				c.Log.Level = "warn"
			},
		},
		{
			name: "consumer group timing from env and file",
			yaml: "kafka:\n  session_timeout: 45s\n  rebalance_timeout: 1m\n",
			env:  map[string]string{"SWITCHBOARD_KAFKA_HEARTBEAT_INTERVAL": "3s"},
			want: func(c *Config) {
				c.Kafka.SessionTimeout = 45 * time.Second
				c.Kafka.HeartbeatInterval = 3 * time.Second
				c.Kafka.RebalanceTimeout = time.Minute
			},
		},
		{
			name: "env list for kafka.brokers",
			env:  map[string]string{"SWITCHBOARD_KAFKA_BROKERS": "k1:9092, k2:9092,"},
			want: func(c *Config) {
				c.Kafka.Brokers = []string{"k1:9092", "k2:9092"}
				c.ItemSvc.Enabled = false
			},
		},
		{
			name:  "flag list for kafka.brokers",
			env:   map[string]string{"SWITCHBOARD_KAFKA_BROKERS": "k1:9092"},
			flags: []string{"--kafka-brokers=k2:9092,k3:9092", "--kafka-embedded-addr=127.0.0.1:19092", "--redis-url=redis://r:6379/0"},
			want: func(c *Config) {
				c.Kafka.Brokers = []string{"k2:9092", "k3:9092"}
				c.Kafka.Embedded.Addr = "127.0.0.1:19092"
				c.Redis.URL = "redis://r:6379/0"
				c.ItemSvc.Enabled = false
			},
		},
		{
			name: "itemsvc.enabled set overrides the embedded rule",
			yaml: "kafka:\n  brokers: [\"k1:9092\"]\nitemsvc:\n  enabled: true\n",
			want: func(c *Config) {
				c.Kafka.Brokers = []string{"k1:9092"}
				c.ItemSvc.Enabled = true
			},
		},
		{
			name: "itemsvc.enabled false from env with the embedded broker",
			env:  map[string]string{"SWITCHBOARD_ITEMSVC_ENABLED": "false"},
			want: func(c *Config) { c.ItemSvc.Enabled = false },
		},
		{
			name: "topics from env as YAML",
			env:  map[string]string{"SWITCHBOARD_KAFKA_TOPICS": "[{name: a, channels: [x, 'item:{subject}']}, {name: b, types: [t.one], channels: ['g:{data.group_id}']}]"},
			want: func(c *Config) {
				c.Kafka.Topics = []TopicRoute{
					{Name: "a", Channels: []string{"x", "item:{subject}"}},
					{Name: "b", Types: []string{"t.one"}, Channels: []string{"g:{data.group_id}"}},
				}
				c.Commands[0].OutcomeTopic = "b"
			},
			yaml: "commands:\n  - {name: takedowns, roles: [police, moderator, partner], topic: takedown.commands, type: takedown.requested, key: item_id, fields: {required: [item_id, reason], optional: [authority_ref]}, outcome_topic: b, progress: [item.removed], outcomes: [{type: takedown.confirmed, status: 200}, {type: takedown.rejected, when: {reason: not_found}, status: 404}, {type: takedown.rejected, status: 422}]}\n",
		},
		{
			name: "commands from env as JSON",
			env: map[string]string{"SWITCHBOARD_COMMANDS": `[{"name":"holds","roles":["partner"],"topic":"hold.commands","type":"hold.requested","key":"item_id",` +
				`"fields":{"required":["item_id"]},"outcome_topic":"takedown.events","outcomes":[{"type":"hold.placed","when":{"holdState":"on"},"status":200}],"timeout":"3s"}]`},
			want: func(c *Config) {
				c.Commands = []Command{{Name: "holds", Roles: []string{"partner"}, Topic: "hold.commands", Type: "hold.requested", Key: "item_id",
					Fields: CommandFields{Required: []string{"item_id"}}, OutcomeTopic: "takedown.events",
					Outcomes: []CommandOutcome{{Type: "hold.placed", When: map[string]string{"holdState": "on"}, Status: 200}}, Timeout: 3 * time.Second}}
			},
		},
		{
			name: "topics and commands from file",
			yaml: `
kafka:
  topics:
    - name: items.posted
      types: ["item.posted", "item.updated"]
      channels: ["group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"]
    - name: takedown.events
      channels: ["takedowns", "corr:{correlationid}"]
commands:
  - name: holds
    roles: [moderator]
    topic: hold.commands
    type: hold.requested
    key: item_id
    fields: {required: [item_id], optional: [note]}
    outcome_topic: takedown.events
    progress: [hold.progress]
    outcomes:
      - {type: hold.placed, status: 200}
      - {type: hold.refused, when: {reasonCode: gone}, status: 410}
otel:
  endpoint: http://collector:4318
  service_name: sb-eu
`,
			want: func(c *Config) {
				c.Kafka.Topics = []TopicRoute{
					{Name: "items.posted", Types: []string{"item.posted", "item.updated"}, Channels: []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"}},
					{Name: "takedown.events", Channels: []string{"takedowns", "corr:{correlationid}"}},
				}
				c.Commands = []Command{{Name: "holds", Roles: []string{"moderator"}, Topic: "hold.commands", Type: "hold.requested", Key: "item_id",
					Fields: CommandFields{Required: []string{"item_id"}, Optional: []string{"note"}}, OutcomeTopic: "takedown.events",
					Progress: []string{"hold.progress"},
					Outcomes: []CommandOutcome{{Type: "hold.placed", Status: 200}, {Type: "hold.refused", When: map[string]string{"reasonCode": "gone"}, Status: 410}}}}
				c.OTel = OTel{Endpoint: "http://collector:4318", ServiceName: "sb-eu"}
			},
		},
		{
			name: "principals from file",
			yaml: `
auth:
  principals:
    - name: nl-police
      role: police
      token_sha256: "` + hash + `"
    - name: acme
      role: partner
      token_sha256: "` + strings.ToUpper(hash) + `"
      channels: ["item:*"]
    - name: local-dev
      role: moderator
      token: "dev-only-token"
`,
			want: func(c *Config) {
				c.Auth.Principals = []Principal{
					{Name: "nl-police", Role: "police", TokenSHA256: hash},
					{Name: "acme", Role: "partner", TokenSHA256: strings.ToUpper(hash), Channels: []string{"item:*"}},
					{Name: "local-dev", Role: "moderator", Token: "dev-only-token"},
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.yaml != "" {
				path = writeFile(t, tt.yaml)
			}
			got, err := Load(path, parseFlags(t, tt.flags...))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := wantDefaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadConfigFlag(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "http:\n  addr: \":9100\"\n")
	got, err := Load("", parseFlags(t, "--config", path))
	if err != nil {
		t.Fatal(err)
	}
	if got.HTTP.Addr != ":9100" {
		t.Errorf("http.addr = %q, want the file's :9100", got.HTTP.Addr)
	}
}

func TestLoadNilFlags(t *testing.T) {
	clearEnv(t)
	got, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantDefaults()) {
		t.Errorf("Load(\"\", nil) = %+v, want the defaults", got)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want string // the whole message
	}{
		{
			name: "unknown top-level key",
			yaml: "htp:\n  addr: \":1\"\n",
			want: `config: unknown key "htp"`,
		},
		{
			name: "unknown nested key",
			yaml: "hub:\n  histroy:\n    size: 5\n",
			want: `config: unknown key "hub.histroy"`,
		},
		{
			name: "unknown leaf key",
			yaml: "hub:\n  history:\n    sise: 5\n",
			want: `config: unknown key "hub.history.sise"`,
		},
		{
			name: "dotted unknown key",
			yaml: "hub.histroy.size: 5\n",
			want: `config: unknown key "hub.histroy"`,
		},
		{
			name: "unknown key in a principal",
			yaml: "auth:\n  principals:\n    - name: a\n      rol: police\n      token: t\n",
			want: `config: unknown key "auth.principals[0].rol"`,
		},
		{
			name: "bad duration in file",
			yaml: "hub:\n  history:\n    ttl: abc\n",
			want: `config: hub.history.ttl: time: invalid duration "abc"`,
		},
		{
			name: "bad duration in env",
			env:  map[string]string{"SWITCHBOARD_TAKEDOWN_MAX_WAIT": "soon"},
			want: `config: takedown.max_wait: time: invalid duration "soon"`,
		},
		{
			name: "duration without unit",
			yaml: "sse:\n  heartbeat: 15\n",
			want: `config: sse.heartbeat: time: missing unit in duration "15"`,
		},
		{
			name: "bad int in file",
			yaml: "hub:\n  history:\n    size: lots\n",
			want: `config: hub.history.size: cannot parse "lots" as int: invalid syntax`,
		},
		{
			name: "bad int in env",
			env:  map[string]string{"SWITCHBOARD_HUB_CLIENT_QUEUE": "1k"},
			want: `config: hub.client_queue: cannot parse "1k" as int: invalid syntax`,
		},
		{
			name: "bad bool in env",
			env:  map[string]string{"SWITCHBOARD_DEMO_ENABLED": "maybe"},
			want: `config: demo.enabled: cannot parse "maybe" as bool: invalid syntax`,
		},
		{
			name: "int out of range",
			yaml: "hub:\n  client_queue: 99999999999999999999\n",
			want: `config: hub.client_queue: 1e+20 is out of range`,
		},
		{
			name: "fraction for an int",
			yaml: "ws:\n  max_message_bytes: 1.5\n",
			want: `config: ws.max_message_bytes: 1.5 is not a whole number`,
		},
		{
			name: "env names a section",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY": "5"},
			want: `config: hub.history: is a section, not a value; unset SWITCHBOARD_HUB_HISTORY`,
		},
		{
			name: "env list for a list of maps",
			env:  map[string]string{"SWITCHBOARD_AUTH_PRINCIPALS": "a,b"},
			want: `config: auth.principals[0]: expected a map or struct, got "string"`,
		},
		{
			name: "v1 topic key in file",
			yaml: "kafka:\n  topics:\n    reports: my.reports\n",
			want: `config: kafka.topics.reports: is a v1 key; v2 replaced it by kafka.topics, a list of {name, types, channels}: the entry with the "reports" channel`,
		},
		{
			name: "v1 dlq key in file",
			yaml: "kafka:\n  topics:\n    dlq: my.dlq\n",
			want: `config: kafka.topics.dlq: is a v1 key; v2 replaced it by kafka.dlq`,
		},
		{
			name: "v1 routing keys in file",
			yaml: "routing:\n  events: [takedowns]\n  commands: [takedowns]\n",
			want: "config: routing.commands: is a v1 key; v2 replaced it by kafka.topics[].channels (the entry of takedown.commands)\n" +
				"config: routing.events: is a v1 key; v2 replaced it by kafka.topics[].channels (the entry of takedown.events)",
		},
		{
			name: "v1 key in env",
			env:  map[string]string{"SWITCHBOARD_ROUTING_EVENTS": "takedowns"},
			want: `config: routing.events: (SWITCHBOARD_ROUTING_EVENTS) is a v1 key; v2 replaced it by kafka.topics[].channels (the entry of takedown.events)`,
		},
		{
			name: "v1 topic key in env",
			env:  map[string]string{"SWITCHBOARD_KAFKA_TOPICS_COMMANDS": "cmds"},
			want: `config: kafka.topics.commands: (SWITCHBOARD_KAFKA_TOPICS_COMMANDS) is a v1 key; v2 replaced it by commands[].topic (the "takedowns" command's) and its entry in kafka.topics`,
		},
		{
			name: "unknown key in a topic",
			yaml: "kafka:\n  topics:\n    - name: a\n      chanels: [x]\n",
			want: `config: unknown key "kafka.topics[0].chanels"`,
		},
		{
			name: "unknown key in a command outcome",
			yaml: "commands:\n  - name: a\n    outcomes:\n      - {type: x, code: 200}\n",
			want: `config: unknown key "commands[0].outcomes[0].code"`,
		},
		{
			name: "topics in env not YAML",
			env:  map[string]string{"SWITCHBOARD_KAFKA_TOPICS": "[{name: a"},
			want: `config: kafka.topics: not a YAML or JSON list: line 1: did not find expected ',' or '}'`,
		},
		{
			name: "topics in env not a list",
			env:  map[string]string{"SWITCHBOARD_KAFKA_TOPICS": "items.reported"},
			want: `config: kafka.topics: not a YAML or JSON list, but string "items.reported"`,
		},
		{
			name: "unknown key in a command from env",
			env:  map[string]string{"SWITCHBOARD_COMMANDS": `[{"name":"a","topik":"t"}]`},
			want: `config: unknown key "commands[0].topik"`,
		},
		{
			name: "bad command timeout in env",
			env:  map[string]string{"SWITCHBOARD_COMMANDS": `[{"name":"a","timeout":"soon"}]`},
			want: `config: commands[0].timeout: time: invalid duration "soon"`,
		},
		{
			name: "topics and commands validated after load",
			env: map[string]string{
				"SWITCHBOARD_KAFKA_TOPICS": `[{name: items.posted, channels: ["group:{data.group_id}"]}]`,
			},
			want: `config: commands[0].outcome_topic: "takedown.events" is not one of kafka.topics (command "takedowns"): its outcomes would never be read`,
		},
		{
			name: "when members that differ only in case",
			yaml: "commands:\n  - name: a\n    roles: [police]\n    topic: a.cmd\n    type: a.req\n    key: id\n    fields: {required: [id]}\n    outcome_topic: takedown.events\n    outcomes:\n      - {type: a.ok, when: {Code: x, code: y}, status: 200}\n",
			want: `config: commands[0].outcomes[0].when: has members whose names differ only in case`,
		},
		{
			name: "map where a value belongs",
			yaml: "http:\n  addr:\n    port: 1\n",
			want: `config: http.addr: expected string, got a map`,
		},
		{
			name: "validation after load",
			env:  map[string]string{"SWITCHBOARD_LOG_LEVEL": "loud"},
			want: `config: log.level: "loud" is not one of debug, info, warn, error`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.yaml != "" {
				path = writeFile(t, tt.yaml)
			}
			_, err := Load(path, parseFlags(t))
			if err == nil {
				t.Fatalf("Load succeeded, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Load error\n got %s\nwant %s", err, tt.want)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error %v is not a *KeyError", err)
			}
		})
	}
}

func TestLoadUnknownKeysAreAllReported(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "hub:\n  history:\n    sise: 5\n    tll: 1h\nfoo: 1\n")
	_, err := Load(path, nil)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Load error %v, want ErrUnknownKey", err)
	}
	for _, k := range []string{`"hub.history.sise"`, `"hub.history.tll"`, `"foo"`} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not name %s", err, k)
		}
	}
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if !strings.HasPrefix(line, "config: ") {
			t.Errorf("error line %q does not start with config: ", line)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	clearEnv(t)
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "config: ") || !strings.Contains(err.Error(), path) {
		t.Errorf("Load error %v, want one that starts with config: and names %s", err, path)
	}
}

func TestValidate(t *testing.T) {
	const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct {
		name   string
		change func(c *Config)
		want   string // the whole message
	}{
		{"http.addr", func(c *Config) { c.HTTP.Addr = "8080" }, `config: http.addr: "8080" is not host:port`},
		{"http.addr port", func(c *Config) { c.HTTP.Addr = ":http" }, `config: http.addr: ":http": port "http" is not a number from 0 to 65535`},
		{"origin", func(c *Config) { c.HTTP.AllowedOrigins = []string{"example.com"} }, `config: http.allowed_origins[0]: "example.com" is not an origin like https://example.com or *`},
		{"no outcome sources", func(c *Config) { c.Takedown.OutcomeSources = nil }, `config: takedown.outcome_sources: must name at least one source: no takedown could ever be decided`},
		{"outcome source", func(c *Config) { c.Takedown.OutcomeSources = []string{"/ok", "%zz"} }, `config: takedown.outcome_sources[1]: "%zz" is not a URI reference`},
		{"max body", func(c *Config) { c.HTTP.MaxBodyBytes = 0 }, `config: http.max_body_bytes: must be > 0, got 0`},
		{"shutdown", func(c *Config) { c.HTTP.ShutdownTimeout = 0 }, `config: http.shutdown_timeout: must be > 0, got 0s`},
		{"body timeout", func(c *Config) { c.HTTP.BodyTimeout = 0 }, `config: http.body_timeout: must be > 0, got 0s`},
		{"unauthenticated connections", func(c *Config) { c.Limits.UnauthenticatedConnections = 0 }, `config: limits.unauthenticated_connections: must be > 0, got 0`},
		{"auth failure rate", func(c *Config) { c.Limits.AuthFailureRate = -1 }, `config: limits.auth_failure_rate: must be > 0, got -1`},
		{"auth failure burst", func(c *Config) { c.Limits.AuthFailureBurst = 0 }, `config: limits.auth_failure_burst: must be > 0, got 0`},
		{"auth failure sources", func(c *Config) { c.Limits.AuthFailureSources = 0 }, `config: limits.auth_failure_sources: must be > 0, got 0`},
		{"broker", func(c *Config) { c.Kafka.Brokers = []string{"k1:9092", "k2"} }, `config: kafka.brokers[1]: "k2" is not host:port`},
		{"broker without host", func(c *Config) { c.Kafka.Brokers = []string{":9092"} }, `config: kafka.brokers[0]: ":9092" needs a host and a port from 1 to 65535`},
		{"embedded addr", func(c *Config) { c.Kafka.Embedded.Addr = "127.0.0.1:99999" }, `config: kafka.embedded.addr: "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"partitions", func(c *Config) { c.Kafka.Embedded.Partitions = 0 }, `config: kafka.embedded.partitions: must be > 0, got 0`},
		{"group", func(c *Config) { c.Kafka.GroupID = "" }, `config: kafka.group_id: must not be empty`},
		{"topic", func(c *Config) { c.Kafka.Topics[0].Name = "a b" }, `config: kafka.topics[0].name: "a b" is not a Kafka topic name ([a-zA-Z0-9._-], 1 to 249)`},
		{"dlq topic", func(c *Config) { c.Kafka.DLQ = "" }, `config: kafka.dlq: "" is not a Kafka topic name ([a-zA-Z0-9._-], 1 to 249)`},
		{"dlq is a routed topic", func(c *Config) { c.Kafka.DLQ = "takedown.events" }, `config: kafka.topics[2].name: topic "takedown.events" is also kafka.dlq`},
		{"same topic twice", func(c *Config) { c.Kafka.Topics[1].Name = "items.reported" }, `config: kafka.topics[1].name: topic "items.reported" is also kafka.topics[0]; name each topic once`},
		{"no topics", func(c *Config) { c.Kafka.Topics = nil; c.Commands = nil }, `config: kafka.topics: needs at least one topic: the hub would consume nothing`},
		{"empty type", func(c *Config) { c.Kafka.Topics[0].Types = []string{"item.reported", " "} },
			`config: kafka.topics[0].types[1]: must be a non-empty event type (topic "items.reported")`},
		{"session timeout", func(c *Config) { c.Kafka.SessionTimeout = 0 }, `config: kafka.session_timeout: must be > 0, got 0s`},
		{"heartbeat interval", func(c *Config) { c.Kafka.HeartbeatInterval = -time.Second }, `config: kafka.heartbeat_interval: must be > 0, got -1s`},
		{"rebalance timeout", func(c *Config) { c.Kafka.RebalanceTimeout = 0 }, `config: kafka.rebalance_timeout: must be > 0, got 0s`},
		{"heartbeat not below session", func(c *Config) { c.Kafka.HeartbeatInterval = 6 * time.Second },
			`config: kafka.heartbeat_interval: 6s must be below kafka.session_timeout 6s (a third of it or less)`},
		{"no channels", func(c *Config) { c.Kafka.Topics[2].Channels = nil }, `config: kafka.topics[2].channels: needs at least one channel template (topic "takedown.events")`},
		{"unknown placeholder", func(c *Config) { c.Kafka.Topics[0].Channels = []string{"item:{item}"} },
			`config: kafka.topics[0].channels[0]: channel template "item:{item}": unknown placeholder {item} (known: {subject}, {correlationid}, {type}, {source}, {data.<field>}) (topic "items.reported")`},
		{"bad data field", func(c *Config) { c.Kafka.Topics[0].Channels = []string{"g:{data.a.b}"} },
			`config: kafka.topics[0].channels[0]: channel template "g:{data.a.b}": {data.a.b}: a data field is 1 to 64 of [A-Za-z0-9_-] (topic "items.reported")`},
		{"bad channel template", func(c *Config) { c.Kafka.Topics[1].Channels = []string{"Take Downs"} },
			`config: kafka.topics[1].channels[0]: channel template "Take Downs": hub: bad channel name: "Take Downs": the namespace may hold only a-z 0-9 . _ - (topic "takedown.commands")`},
		{"unmatched brace", func(c *Config) { c.Kafka.Topics[1].Channels = []string{"item:{subject"} },
			`config: kafka.topics[1].channels[0]: channel template "item:{subject": unmatched '{' (topic "takedown.commands")`},
		{"command name", func(c *Config) { c.Commands[0].Name = "Take/Downs" }, `config: commands[0].name: "Take/Downs" is not a path segment of 1 to 64 of [a-z0-9-]`},
		{"command name empty", func(c *Config) { c.Commands[0].Name = "" }, `config: commands[0].name: "" is not a path segment of 1 to 64 of [a-z0-9-]`},
		{"command name twice", func(c *Config) { c.Commands = append(c.Commands, DefaultCommands()...) }, `config: commands[1].name: "takedowns" is also commands[0]`},
		{"command name reserved", func(c *Config) { c.Commands[0].Name = "sse" }, `config: commands[0].name: "sse" is a built-in route, /v1/sse; reserved: sse, ws, session, commands, sdk`},
		{"command name reserved commands", func(c *Config) { c.Commands[0].Name = "commands" }, `config: commands[0].name: "commands" is a built-in route, /v1/commands; reserved: sse, ws, session, commands, sdk`},
		{"command role", func(c *Config) { c.Commands[0].Roles = []string{"police", "admin"} }, `config: commands[0].roles[1]: "admin" is not one of moderator, partner, police (command "takedowns")`},
		{"command no role", func(c *Config) { c.Commands[0].Roles = nil }, `config: commands[0].roles: needs at least one role (command "takedowns"): nobody could call it`},
		{"command topic", func(c *Config) { c.Commands[0].Topic = "" }, `config: commands[0].topic: must not be empty (command "takedowns")`},
		{"command topic name", func(c *Config) { c.Commands[0].Topic = "a/b" }, `config: commands[0].topic: "a/b" is not a Kafka topic name ([a-zA-Z0-9._-], 1 to 249)`},
		{"command type", func(c *Config) { c.Commands[0].Type = "" }, `config: commands[0].type: must not be empty (command "takedowns")`},
		{"command key", func(c *Config) { c.Commands[0].Key = "" }, `config: commands[0].key: must not be empty (command "takedowns")`},
		{"command key not required", func(c *Config) { c.Commands[0].Key = "authority_ref" },
			`config: commands[0].key: "authority_ref" is not in fields.required (command "takedowns"): every command needs its key`},
		{"command field twice", func(c *Config) { c.Commands[0].Fields.Optional = []string{"reason"} },
			`config: commands[0].fields.optional[0]: "reason" is also commands[0].fields.required[1] (command "takedowns")`},
		{"command no outcomes", func(c *Config) { c.Commands[0].Outcomes = nil }, `config: commands[0].outcomes: needs at least one outcome (command "takedowns"): no request could ever be answered`},
		{"command status low", func(c *Config) { c.Commands[0].Outcomes[0].Status = 199 }, `config: commands[0].outcomes[0].status: 199 is not an HTTP status from 200 to 599 (command "takedowns")`},
		{"command status high", func(c *Config) { c.Commands[0].Outcomes[2].Status = 600 }, `config: commands[0].outcomes[2].status: 600 is not an HTTP status from 200 to 599 (command "takedowns")`},
		{"command outcome type empty", func(c *Config) { c.Commands[0].Outcomes[1].Type = "" }, `config: commands[0].outcomes[1].type: must not be empty (command "takedowns")`},
		{"command outcome is progress", func(c *Config) { c.Commands[0].Progress = []string{"item.removed", "takedown.confirmed"} },
			`config: commands[0].outcomes[0].type: "takedown.confirmed" is also in progress (command "takedowns"): an event type is progress or an outcome, not both`},
		{"command outcome topic not consumed", func(c *Config) { c.Commands[0].OutcomeTopic = "takedown.answers" },
			`config: commands[0].outcome_topic: "takedown.answers" is not one of kafka.topics (command "takedowns"): its outcomes would never be read`},
		{"command outcome topic empty", func(c *Config) { c.Commands[0].OutcomeTopic = "" }, `config: commands[0].outcome_topic: must not be empty (command "takedowns")`},
		{"command timeout", func(c *Config) { c.Commands[0].Timeout = -time.Second }, `config: commands[0].timeout: must not be negative, got -1s (command "takedowns")`},
		{"otel endpoint", func(c *Config) { c.OTel.Endpoint = "collector:4318" }, `config: otel.endpoint: "collector:4318" is not an OTLP/HTTP URL like http://collector:4318`},
		{"otel service name", func(c *Config) { c.OTel.ServiceName = "" }, `config: otel.service_name: must not be empty`},
		{"redis scheme", func(c *Config) { c.Redis.URL = "http://r:6379" }, `config: redis.url: scheme "http" is not redis, rediss or unix`},
		{"redis host", func(c *Config) { c.Redis.URL = "redis://" }, `config: redis.url: needs a host, like redis://localhost:6379/0`},
		{"redis url and sentinel", func(c *Config) {
			c.Redis.URL = "redis://r:6379/0"
			c.Redis.Sentinel = RedisSentinel{Master: "m", Addrs: []string{"s1:26379"}}
		}, `config: redis.sentinel.master: is set with redis.url: set one of redis.url, redis.sentinel.* and redis.cluster.addrs`},
		{"redis sentinel and cluster", func(c *Config) {
			c.Redis.Sentinel.Addrs = []string{"s1:26379"}
			c.Redis.Cluster.Addrs = []string{"c1:6379"}
		}, `config: redis.cluster.addrs: is set with redis.sentinel.addrs: set one of redis.url, redis.sentinel.* and redis.cluster.addrs`},
		{"redis sentinel without master", func(c *Config) { c.Redis.Sentinel.Addrs = []string{"s1:26379"} }, `config: redis.sentinel.master: is needed with redis.sentinel.addrs`},
		{"redis sentinel without addrs", func(c *Config) { c.Redis.Sentinel.Master = "m" }, `config: redis.sentinel.addrs: is needed with redis.sentinel.master`},
		{"redis sentinel addr", func(c *Config) { c.Redis.Sentinel = RedisSentinel{Master: "m", Addrs: []string{"s1"}} }, `config: redis.sentinel.addrs[0]: "s1" is not host:port`},
		{"redis cluster addr", func(c *Config) { c.Redis.Cluster.Addrs = []string{"c1:6379", ":6379"} }, `config: redis.cluster.addrs[1]: ":6379" needs a host and a port from 1 to 65535`},
		{"redis sentinel password alone", func(c *Config) { c.Redis.Sentinel.Password = "pw" }, `config: redis.sentinel.password: is set without redis.sentinel.master and redis.sentinel.addrs`},
		{"redis cluster password with url", func(c *Config) {
			c.Redis.URL = "redis://r:6379/0"
			c.Redis.Cluster.Password = "pw"
		}, `config: redis.cluster.password: is set without redis.cluster.addrs`},
		{"redis tls without redis", func(c *Config) { c.Redis.TLS.Enabled = true }, `config: redis.tls.enabled: is set, but no Redis is: set redis.url, redis.sentinel.* or redis.cluster.addrs`},
		{"redis tls enabled with url", func(c *Config) {
			c.Redis.URL = "redis://r:6379/0"
			c.Redis.TLS.Enabled = true
		}, `config: redis.tls.enabled: is for redis.sentinel and redis.cluster: use rediss:// in redis.url`},
		{"redis tls file with redis://", func(c *Config) {
			c.Redis.URL = "redis://r:6379/0"
			c.Redis.TLS.CAFile = "ca.pem"
		}, `config: redis.tls.ca_file: needs TLS: use rediss:// in redis.url`},
		{"redis tls file without enabled", func(c *Config) {
			c.Redis.Cluster.Addrs = []string{"c1:6379"}
			c.Redis.TLS.CertFile = "c.pem"
		}, `config: redis.tls.cert_file: is set, but redis.tls.enabled is false: the connection would be plaintext`},
		{"redis tls cert without key", func(c *Config) {
			c.Redis.Cluster.Addrs = []string{"c1:6379"}
			c.Redis.TLS = RedisTLS{Enabled: true, CertFile: "c.pem"}
		}, `config: redis.tls.key_file: is needed with redis.tls.cert_file`},
		{"redis tls ca missing", func(c *Config) {
			c.Redis.URL = "rediss://r:6380/0"
			c.Redis.TLS.CAFile = "/nonexistent/ca.pem"
		}, `config: redis.tls.ca_file: open /nonexistent/ca.pem: no such file or directory`},
		{"history size", func(c *Config) { c.Hub.History.Size = -1 }, `config: hub.history.size: must be > 0, got -1`},
		{"history ttl", func(c *Config) { c.Hub.History.TTL = 0 }, `config: hub.history.ttl: must be > 0, got 0s`},
		{"client queue", func(c *Config) { c.Hub.ClientQueue = 0 }, `config: hub.client_queue: must be > 0, got 0`},
		{"client queue bytes", func(c *Config) { c.Hub.ClientQueueBytes = -1 }, `config: hub.client_queue_bytes: must be > 0, got -1`},
		{"max channels", func(c *Config) { c.Hub.MaxChannels = 0 }, `config: hub.max_channels: must be > 0, got 0`},
		{"heartbeat", func(c *Config) { c.SSE.Heartbeat = -time.Second }, `config: sse.heartbeat: must be > 0, got -1s`},
		{"retry", func(c *Config) { c.SSE.Retry = 0 }, `config: sse.retry: must be > 0, got 0s`},
		{"ping", func(c *Config) { c.WS.PingInterval = 0 }, `config: ws.ping_interval: must be > 0, got 0s`},
		{"ws message", func(c *Config) { c.WS.MaxMessageBytes = 0 }, `config: ws.max_message_bytes: must be > 0, got 0`},
		{"ws write", func(c *Config) { c.WS.WriteTimeout = 0 }, `config: ws.write_timeout: must be > 0, got 0s`},
		{"takedown timeout", func(c *Config) { c.Takedown.Timeout = time.Minute }, `config: takedown.timeout: 1m0s is longer than takedown.max_wait 55s`},
		{"takedown max wait", func(c *Config) { c.Takedown.MaxWait = 0 }, `config: takedown.max_wait: must be > 0, got 0s`},
		{"result ttl", func(c *Config) { c.Takedown.ResultTTL = 0 }, `config: takedown.result_ttl: must be > 0, got 0s`},
		{"latency", func(c *Config) { c.ItemSvc.Latency = -1 }, `config: itemsvc.latency: must not be negative, got -1ns`},
		{"demo rate", func(c *Config) { c.Demo.Rate = 0 }, `config: demo.rate: must be > 0, got 0`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `config: log.format: "xml" is not one of text, json`},
		{"log level", func(c *Config) { c.Log.Level = "INFO" }, `config: log.level: "INFO" is not one of debug, info, warn, error`},
		{"principal role", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "admin", Token: "t"}}
		}, `config: auth.principals[0].role: "admin" is not one of moderator, partner, police`},
		{"principal name", func(c *Config) {
			c.Auth.Principals = []Principal{{Role: "police", Token: "t"}}
		}, `config: auth.principals[0].name: must not be empty`},
		{"principal duplicate", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "police", Token: "t"}, {Name: "a", Role: "partner", Token: "u"}}
		}, `config: auth.principals[1].name: "a" is also auth.principals[0]`},
		{"principal both tokens", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "police", Token: "t", TokenSHA256: hash}}
		}, `config: auth.principals[0]: set token_sha256 or token, not both`},
		{"principal no token", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "police"}}
		}, `config: auth.principals[0]: needs token_sha256 (or token, for development)`},
		{"principal short hash", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "police", TokenSHA256: hash[:63]}}
		}, `config: auth.principals[0].token_sha256: must be 64 hex characters, the SHA-256 of the token`},
		{"principal non-hex hash", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "police", TokenSHA256: "zz" + hash[2:]}}
		}, `config: auth.principals[0].token_sha256: must be 64 hex characters, the SHA-256 of the token`},
		{"principal channel", func(c *Config) {
			c.Auth.Principals = []Principal{{Name: "a", Role: "partner", Token: "t", Channels: []string{"item:*", "bad channel"}}}
		}, `config: auth.principals[0].channels[1]: "bad channel" is not a channel or pattern like item:*`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := wantDefaults()
			tt.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
	}{
		{"defaults", func(*Config) {}},
		{"listen on port 0", func(c *Config) { c.HTTP.Addr = "127.0.0.1:0" }},
		{"ipv6 broker", func(c *Config) { c.Kafka.Brokers = []string{"[::1]:9092"} }},
		{"any origin", func(c *Config) { c.HTTP.AllowedOrigins = []string{"*", "http://localhost:3000"} }},
		{"rediss", func(c *Config) { c.Redis.URL = "rediss://user:pw@r.example.com:6380/2" }},
		{"unix redis", func(c *Config) { c.Redis.URL = "unix:///run/redis.sock" }},
		{"redis sentinel", func(c *Config) {
			c.Redis.Sentinel = RedisSentinel{Master: "mymaster", Addrs: []string{"s1:26379", "s2:26379", "s3:26379"}, Password: "pw"}
		}},
		{"redis cluster over tls", func(c *Config) {
			c.Redis.Cluster = RedisCluster{Addrs: []string{"c1:6379", "c2:6379"}, Password: "pw"}
			c.Redis.TLS.Enabled = true
		}},
		{"timeout equals max wait", func(c *Config) { c.Takedown.Timeout = c.Takedown.MaxWait }},
		{"no latency", func(c *Config) { c.ItemSvc.Latency = 0 }},
		{"type routing", func(c *Config) { c.Kafka.Topics[2].Channels = []string{"{type}", "type:{type}"} }},
		{"data and source routing", func(c *Config) {
			c.Kafka.Topics = append(c.Kafka.Topics, TopicRoute{Name: "items.posted", Types: []string{"item.posted"},
				Channels: []string{"group:{data.group_id}", "src:{source}", "{data.kind}:{data.id}"}})
		}},
		{"no commands", func(c *Config) { c.Commands = nil }},
		{"command timeout zero", func(c *Config) { c.Commands[0].Timeout = 0 }},
		{"otel endpoint", func(c *Config) { c.OTel.Endpoint = "https://otel.example.com:4318" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := wantDefaults()
			tt.change(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := wantDefaults()
	c.Hub.History.Size = 0
	c.Log.Format = "xml"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	want := "config: hub.history.size: must be > 0, got 0\nconfig: log.format: \"xml\" is not one of text, json"
	if err.Error() != want {
		t.Errorf("Validate error\n got %s\nwant %s", err, want)
	}
}

// TestKeysMatchConfig checks that every leaf of Config has a key with a
// default, and every key a field: a key without a default is never read
// from the environment.
func TestKeysMatchConfig(t *testing.T) {
	var fromStruct []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			key := prefix + f.Tag.Get("mapstructure")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(key+".", f.Type)
				continue
			}
			fromStruct = append(fromStruct, key)
		}
	}
	walk("", reflect.TypeFor[Config]())
	slices.Sort(fromStruct)

	keys := Keys()
	if !slices.IsSorted(keys) {
		t.Errorf("Keys() is not sorted: %v", keys)
	}
	if !slices.Equal(keys, fromStruct) {
		t.Errorf("Keys() = %v\nConfig fields = %v", keys, fromStruct)
	}
	d := Defaults()
	for _, k := range keys {
		if _, ok := d[k]; !ok {
			t.Errorf("Defaults() lacks %s", k)
		}
	}
}

func TestEmbedded(t *testing.T) {
	tests := []struct {
		name    string
		brokers []string
		want    bool
	}{
		{"none", nil, true},
		{"empty", []string{}, true},
		{"one", []string{"k:9092"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Kafka: Kafka{Brokers: tt.brokers}}
			if got := c.Embedded(); got != tt.want {
				t.Errorf("Embedded() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPrincipalStringHidesToken(t *testing.T) {
	p := Principal{Name: "dev", Role: "moderator", Token: "s3cret", TokenSHA256: "abcdef"}
	c := Config{Auth: Auth{Principals: []Principal{p}}}
	for _, s := range []string{p.String(), fmt.Sprintf("%+v", c)} {
		if strings.Contains(s, "s3cret") || strings.Contains(s, "abcdef") {
			t.Errorf("%q shows a token", s)
		}
	}
}
