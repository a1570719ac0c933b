// Package redistest gives tests the Redis servers to run against: always an
// in-process miniredis, and the real server at 127.0.0.1:6379 when it
// answers. With SWITCHBOARD_CI set, a real server that does not answer fails
// the test instead of being skipped.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RealAddr is where the real Redis server is expected.
const RealAddr = "127.0.0.1:6379"

// Server is one Redis a test runs against.
type Server struct {
	// Name is "miniredis" or "redis".
	Name string
	// Addr is host:port.
	Addr string
	// Prefix is unique to the test, so tests sharing the real server do
	// not see each other's keys.
	Prefix string
	// Mini is the miniredis, nil for the real server.
	Mini *miniredis.Miniredis
}

// Client opens a client, closed when the test ends unless the caller hands
// it to something that closes it.
func (s Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr})
}

// URL is the redis:// URL of the server.
func (s Server) URL() string { return "redis://" + s.Addr + "/0" }

// Servers returns the servers to run a Redis test against.
func Servers(t testing.TB) []Server {
	t.Helper()
	mr := miniredis.RunT(t)
	out := []Server{{Name: "miniredis", Addr: mr.Addr(), Prefix: prefix(), Mini: mr}}
	if realUp() {
		out = append(out, Server{Name: "redis", Addr: RealAddr, Prefix: prefix()})
	} else if os.Getenv("SWITCHBOARD_CI") != "" {
		t.Fatalf("no Redis answers on %s: CI needs the real server (.ci/run starts it)", RealAddr)
	}
	return out
}

// Real returns the real server, skipping the test (or failing it in CI)
// when it does not answer.
func Real(t testing.TB) Server {
	t.Helper()
	if !realUp() {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatalf("no Redis answers on %s: CI needs the real server", RealAddr)
		}
		t.Skipf("no Redis on %s", RealAddr)
	}
	return Server{Name: "redis", Addr: RealAddr, Prefix: prefix()}
}

func realUp() bool {
	c := redis.NewClient(&redis.Options{Addr: RealAddr, DialTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

func prefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "sbtest:" + hex.EncodeToString(b[:]) + ":"
}
