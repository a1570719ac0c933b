package config

import (
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/pflag"
)

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

// flagUsage is the help line of each flag of flagKeys; the key is appended.
var flagUsage = map[string]string{
	"http-addr":           "HTTP listen address",
	"kafka-brokers":       "Kafka brokers, comma-separated; none starts the embedded broker",
	"kafka-embedded-addr": "address of the embedded Kafka broker",
	"redis-url":           "Redis URL for the backplane; none keeps it in memory",
	"log-level":           "log level: debug, info, warn or error",
	"log-format":          "log format: text or json",
	"demo":                "generate item.reported and item.posted events for a live dashboard",
}

// BindFlags defines the flags for the common keys on fs: --config (the YAML
// file), --http-addr, --kafka-brokers, --kafka-embedded-addr, --redis-url,
// --log-level, --log-format and --demo. Given keys, it defines --config and
// only the flags of those keys, for a command that uses no others. Pass the
// same fs to Load. A flag overrides the file and the environment only when
// it is given, so the flag defaults shown in help are the configuration
// defaults but never override a file or environment value.
func BindFlags(fs *pflag.FlagSet, keys ...string) {
	fs.String(flagConfig, "", "path of a YAML configuration file")
	for _, name := range slices.Sorted(maps.Keys(flagKeys)) {
		key := flagKeys[name]
		if len(keys) > 0 && !slices.Contains(keys, key) {
			continue
		}
		usage := fmt.Sprintf("%s (%s)", flagUsage[name], key)
		switch d := defaults[key].(type) {
		case string:
			fs.String(name, d, usage)
		case bool:
			fs.Bool(name, d, usage)
		case []string:
			fs.StringSlice(name, d, usage)
		default:
			panic(fmt.Sprintf("config: no flag type for %s, default %T", key, d))
		}
	}
}
