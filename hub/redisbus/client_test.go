package redisbus

import (
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestNewClientForms: each form of Options makes go-redis's own client of
// that kind, and a bad combination is refused naming its key.
func TestNewClientForms(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    Options
		want string
	}{
		{"url", Options{URL: "redis://r:6379/0"}, "*redis.Client"},
		{"rediss", Options{URL: "rediss://r:6380/0"}, "*redis.Client"},
		{"sentinel", Options{SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}}, "*redis.Client"},
		{"cluster", Options{ClusterAddrs: []string{"c:6379"}, TLS: TLS{Enabled: true}}, "*redis.ClusterClient"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := NewClient(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			got := ""
			switch rdb.(type) {
			case *redis.Client:
				got = "*redis.Client"
			case *redis.ClusterClient:
				got = "*redis.ClusterClient"
			}
			if got != tt.want {
				t.Fatalf("%T, want %s", rdb, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		o    Options
		key  string
	}{
		{"none", Options{}, ""},
		{"two forms", Options{URL: "redis://r:6379", ClusterAddrs: []string{"c:6379"}}, "redis.cluster.addrs"},
		{"tls enabled with url", Options{URL: "redis://r:6379", TLS: TLS{Enabled: true}}, "redis.tls.enabled"},
		{"ca without tls", Options{ClusterAddrs: []string{"c:6379"}, TLS: TLS{CAFile: "ca.pem"}}, "redis.tls.ca_file"},
		{"bad url", Options{URL: "redis://r:port"}, "redis.url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.o)
			var oe *OptionError
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tt.key == "":
			case !errors.As(err, &oe) || oe.Key != tt.key:
				t.Fatalf("%v, want an error of %s", err, tt.key)
			}
		})
	}
}

// TestConnect: Connect answers once Redis does, and says which form failed
// otherwise.
func TestConnect(t *testing.T) {
	srv := redistest.Servers(t)[0]
	rdb, err := Connect(t.Context(), Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	if _, err := Connect(t.Context(), Options{ClusterAddrs: []string{"127.0.0.1:1"}}); err == nil {
		t.Fatal("connected to nothing")
	}
}
