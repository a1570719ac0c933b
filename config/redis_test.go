package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/hub/redisbus"
)

// redisSecret is a password that no output may show.
const redisSecret = "r3dis-never-shown"

// TestLoadRedisConn: the Sentinel and Cluster keys from the file and the
// environment (lists split on commas, the password from its variable) and
// the TLS files reach redisbus.Options, which accepts them; no printed
// configuration shows the password.
func TestLoadRedisConn(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	cert, key, _ := ca.Issue(t, "client", false)

	t.Run("defaults", func(t *testing.T) {
		clearEnv(t)
		c, err := Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if o := c.RedisConn(); o.Configured() || o.Form() != "" {
			t.Errorf("RedisConn = %+v, want none: the in-memory backplane", o)
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("SWITCHBOARD_REDIS_SENTINEL_ADDRS", "s1:26379,s2:26379,s3:26379")
		t.Setenv("SWITCHBOARD_REDIS_SENTINEL_PASSWORD", redisSecret)
		c, err := Load(writeFile(t, fmt.Sprintf(`
redis:
  sentinel:
    master: mymaster
  tls:
    enabled: true
    ca_file: %q
    cert_file: %q
    key_file: %q
`, ca.File, cert, key)), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := redisbus.Options{
			SentinelMaster: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379", "s3:26379"}, SentinelPassword: redisSecret,
			ClusterAddrs: []string{},
			TLS:          redisbus.TLS{Enabled: true, CAFile: ca.File, CertFile: cert, KeyFile: key},
		}
		got := c.RedisConn()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("RedisConn = %+v, want %+v", got, want)
		}
		if got.Form() != "sentinel" {
			t.Errorf("form %q", got.Form())
		}
		if _, err := redisbus.NewClient(got); err != nil {
			t.Errorf("redisbus.NewClient: %v", err)
		}
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if out := fmt.Sprintf(verb, c); strings.Contains(out, redisSecret) {
				t.Errorf("Sprintf(%q, config) shows the password", verb)
			}
		}
	})
	t.Run("cluster", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("SWITCHBOARD_REDIS_CLUSTER_PASSWORD", redisSecret)
		c, err := Load(writeFile(t, `
redis:
  cluster:
    addrs: ["c1:6379", "c2:6379", "c3:6379"]
`), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := c.RedisConn()
		if got.Form() != "cluster" || len(got.ClusterAddrs) != 3 || got.ClusterPassword != redisSecret {
			t.Errorf("RedisConn = %+v", got)
		}
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if out := fmt.Sprintf(verb, c); strings.Contains(out, redisSecret) {
				t.Errorf("Sprintf(%q, config) shows the password", verb)
			}
		}
	})
	t.Run("conflict", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("SWITCHBOARD_REDIS_URL", "redis://r:6379/0")
		_, err := Load(writeFile(t, `
redis:
  cluster:
    addrs: ["c1:6379"]
`), nil)
		want := "config: redis.cluster.addrs: is set with redis.url: set one of redis.url, redis.sentinel.* and redis.cluster.addrs"
		if err == nil || err.Error() != want {
			t.Errorf("Load = %v, want %s", err, want)
		}
	})
	t.Run("password a number", func(t *testing.T) {
		clearEnv(t)
		_, err := Load(writeFile(t, `
redis:
  sentinel:
    master: m
    addrs: ["s1:26379"]
    password: 0123
`), nil)
		if err == nil || !strings.Contains(err.Error(), "redis.sentinel.password: must be a string") || strings.Contains(err.Error(), "0123") {
			t.Errorf("Load = %v", err)
		}
	})
}
