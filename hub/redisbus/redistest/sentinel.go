package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel know the
// primary by.
const SentinelMaster = "sbtest"

// Sentinel is a primary, its replicas and three sentinels watching them,
// all child processes on loopback.
type Sentinel struct {
	// Servers are the primary (first at the start) and the replicas.
	Servers []*Node
	// Sentinels are the three sentinels (quorum 2).
	Sentinels []*Node
	tls       *tls.Config
}

// StartSentinel starts a primary with replicas replicas and three
// sentinels, and waits until the sentinels know every replica and each
// replica is in sync. The sentinels run redis-sentinel, or redis-server
// --sentinel without it. Without redis-server it skips the test, or fails
// it in CI.
func StartSentinel(t testing.TB, replicas int) *Sentinel {
	t.Helper()
	return startSentinel(t, replicas, nil)
}

// StartTLSSentinel is StartSentinel with the servers and the sentinels
// speaking TLS only (clients need a certificate), replication too.
func StartTLSSentinel(t testing.TB, replicas int, f *TLSFiles) *Sentinel {
	t.Helper()
	return startSentinel(t, replicas, f)
}

func startSentinel(t testing.TB, replicas int, f *TLSFiles) *Sentinel {
	t.Helper()
	srv := need(t, "redis-server")
	s := &Sentinel{}
	var tlsArgs []string
	listen := "port %d\n"
	if f != nil {
		s.tls = f.client(t)
		tlsArgs = []string{"--tls-replication", "yes"}
		listen = "port 0\ntls-port %d\n" + fmt.Sprintf("tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\ntls-replication yes\ntls-client-cert-file %s\ntls-client-key-file %s\n",
			f.ServerCert, f.ServerKey, f.CA, f.ClientCert, f.ClientKey)
	}
	primary := newNodeTLS(t, srv, f, append(tlsArgs, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")...)
	s.Servers = append(s.Servers, primary)
	for range replicas {
		s.Servers = append(s.Servers, newNodeTLS(t, srv, f, append(tlsArgs, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port),
			"--repl-diskless-load", "on-empty-db")...))
	}
	sentinelBin, sentinelArgs := srv, []string{"--sentinel"}
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		sentinelBin, sentinelArgs = p, nil
	}
	for range 3 {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf(listen+`bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 2000
sentinel parallel-syncs %s 1
`, port, dir, filepath.Join(dir, "redis.log"), SentinelMaster, primary.Port,
			SentinelMaster, SentinelDownAfter.Milliseconds(), SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		n := &Node{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, bin: sentinelBin, dir: dir,
			args: append([]string{conf}, sentinelArgs...), tls: s.tls}
		n.start(t)
		t.Cleanup(n.Kill)
		s.Sentinels = append(s.Sentinels, n)
	}
	s.WaitOK(t, replicas)
	return s
}

// Addrs are the sentinels' addresses.
func (s *Sentinel) Addrs() []string {
	var out []string
	for _, n := range s.Sentinels {
		out = append(out, n.Addr)
	}
	return out
}

// Client opens a failover client; the caller closes it (or hands it to a
// bus, which does).
func (s *Sentinel) Client() *redis.Client {
	return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: s.Addrs(), DialTimeout: time.Second, TLSConfig: s.tls})
}

// Primary returns the server the sentinels name as the primary now.
func (s *Sentinel) Primary(t testing.TB) *Node {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr, TLSConfig: s.tls})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(t.Context(), SentinelMaster).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Servers {
		if n.Addr == addr[0]+":"+addr[1] {
			return n
		}
	}
	t.Fatalf("the sentinels name %v, not one of the servers", addr)
	return nil
}

// WaitOK waits until every sentinel names a live primary that has at least
// replicas replicas online and in sync, and knows the other sentinels.
func (s *Sentinel) WaitOK(t testing.TB, replicas int) {
	t.Helper()
	deadline := time.Now().Add(ownWait)
	var why string
	for time.Now().Before(deadline) {
		if why = s.notOK(t.Context(), replicas); why == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sentinel setup not ok: %s", why)
}

func (s *Sentinel) notOK(ctx context.Context, replicas int) string {
	for _, sn := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, DialTimeout: time.Second, TLSConfig: s.tls})
		m, err := sc.Master(ctx, SentinelMaster).Result()
		sc.Close()
		if err != nil {
			return sn.Addr + ": " + err.Error()
		}
		if flags := m["flags"]; flags != "master" {
			return sn.Addr + ": primary flags " + flags
		}
		if n, _ := strconv.Atoi(m["num-other-sentinels"]); n < len(s.Sentinels)-1 {
			return sn.Addr + ": knows " + m["num-other-sentinels"] + " other sentinels"
		}
		addr := m["ip"] + ":" + m["port"]
		var primary *Node
		for _, n := range s.Servers {
			if n.Addr == addr {
				primary = n
			}
		}
		if primary == nil {
			return sn.Addr + ": names " + addr
		}
		c := primary.Client()
		repl, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err != nil {
			return addr + ": " + err.Error()
		}
		if !strings.Contains(repl, "role:master") {
			return addr + ": not a primary yet"
		}
		online := strings.Count(repl, "state=online")
		if online < replicas {
			return fmt.Sprintf("%s: %d replicas online", addr, online)
		}
	}
	return ""
}
