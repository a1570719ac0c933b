package config

import "github.com/spf13/pflag"

const flagConfig = "config"

// flagKeys maps each flag of BindFlags, except --config, to its key.
var flagKeys = map[string]string{
	"http-addr":           "http.addr",
	"kafka-brokers":       "kafka.brokers",
	"kafka-embedded-addr": "kafka.embedded.addr",
	"redis-url":           "redis.url",
	"log-level":           "log.level",
	"log-format":          "log.format",
	"demo":                "demo.enabled",
}

// BindFlags defines the flags for the common keys on fs: --config (the YAML
// file), --http-addr, --kafka-brokers, --kafka-embedded-addr, --redis-url,
// --log-level, --log-format and --demo. Pass the same fs to Load. A flag
// overrides the file and the environment only when it is given, so the flag
// defaults shown in help are the configuration defaults but never override
// a file or environment value.
func BindFlags(fs *pflag.FlagSet) {
	fs.String(flagConfig, "", "path of a YAML configuration file")
	fs.String("http-addr", defaults["http.addr"].(string), "HTTP listen address (http.addr)")
	fs.StringSlice("kafka-brokers", nil, "Kafka brokers, comma-separated; none starts the embedded broker (kafka.brokers)")
	fs.String("kafka-embedded-addr", defaults["kafka.embedded.addr"].(string), "address of the embedded Kafka broker (kafka.embedded.addr)")
	fs.String("redis-url", "", "Redis URL for the backplane; none keeps it in memory (redis.url)")
	fs.String("log-level", defaults["log.level"].(string), "log level: debug, info, warn or error (log.level)")
	fs.String("log-format", defaults["log.format"].(string), "log format: text or json (log.format)")
	fs.Bool("demo", false, "generate item.reported events for a live dashboard (demo.enabled)")
}
