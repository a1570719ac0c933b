package redisbus

import (
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestTLS: a bus over rediss:// with redis.tls.{ca_file, cert_file,
// key_file} works against a real server that speaks TLS only and requires
// a client certificate; without the certificate, or trusting another CA,
// it does not connect.
func TestTLS(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	scert, skey, _ := ca.Issue(t, "redis", true)
	ccert, ckey, _ := ca.Issue(t, "switchboard", false)
	f := &redistest.TLSFiles{CA: ca.File, ServerCert: scert, ServerKey: skey, ClientCert: ccert, ClientKey: ckey}
	srv := redistest.StartTLSServer(t, f)
	url := "rediss://" + srv.Addr + "/0"
	ctx := t.Context()

	b, err := Dial(ctx, Options{URL: url, TLS: TLS{CAFile: ca.File, CertFile: ccert, KeyFile: ckey}}, Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	col := newCollector()
	cancel, err := b.Listen(ctx, "reports", col.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := b.Publish(ctx, []string{"reports"}, ev(1)); err != nil {
		t.Fatal(err)
	}
	if got := col.wait(t, 1); got[0].Event.ID != "e-1" {
		t.Fatalf("got %+v", got)
	}
	if r, err := b.Read(ctx, "reports", &hub.Oldest); err != nil || len(r.Entries) != 1 {
		t.Fatalf("read %+v %v", r, err)
	}

	other := kafkaconntest.NewCA(t)
	for name, o := range map[string]Options{
		"no client certificate": {URL: url, TLS: TLS{CAFile: ca.File}},
		"another CA":            {URL: url, TLS: TLS{CAFile: other.File, CertFile: ccert, KeyFile: ckey}},
		"plaintext":             {URL: "redis://" + srv.Addr + "/0"},
	} {
		o.DialTimeout = 2e9
		if rdb, err := Connect(ctx, o); err == nil {
			rdb.Close()
			t.Errorf("%s: connected", name)
		}
	}
}

// TestClusterTLS: a bus over a Cluster that speaks TLS only (clients with a
// certificate, the cluster bus and replication too), with
// redis.tls.{enabled, ca_file, cert_file, key_file}: appends and shard
// messages on every master.
func TestClusterTLS(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	scert, skey, _ := ca.Issue(t, "redis", true)
	ccert, ckey, _ := ca.Issue(t, "switchboard", false)
	f := &redistest.TLSFiles{CA: ca.File, ServerCert: scert, ServerKey: skey, ClientCert: ccert, ClientKey: ckey}
	c := redistest.StartTLSCluster(t, 3, 0, f)
	chans, _ := spread(t, c, 1)
	o := Options{ClusterAddrs: c.Addrs()[:1], TLS: TLS{Enabled: true, CAFile: ca.File, CertFile: ccert, KeyFile: ckey}}
	n := startNode(t, optionsClient(t, o)(), DefaultPrefix, chans)
	for i := 1; i <= 5; i++ {
		if err := n.bus.Publish(t.Context(), chans, ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	n.w.waitFor(t, chans, "e-5")
	if gaps := n.w.check(t, "node", chans, []string{"e-1", "e-2", "e-3", "e-4", "e-5"}); gaps != 0 {
		t.Errorf("%d gaps", gaps)
	}
	o.TLS.CertFile, o.TLS.KeyFile = "", ""
	if rdb, err := Connect(t.Context(), o); err == nil {
		rdb.Close()
		t.Error("connected without a client certificate")
	}
}

// TestSentinelTLS: a bus over Sentinel with the sentinels and the servers
// speaking TLS only (redis.tls.{enabled, ca_file, cert_file, key_file}
// apply to both), through a failover.
func TestSentinelTLS(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	scert, skey, _ := ca.Issue(t, "redis", true)
	ccert, ckey, _ := ca.Issue(t, "switchboard", false)
	f := &redistest.TLSFiles{CA: ca.File, ServerCert: scert, ServerKey: skey, ClientCert: ccert, ClientKey: ckey}
	s := redistest.StartTLSSentinel(t, 1, f)
	o := Options{SentinelMaster: redistest.SentinelMaster, SentinelAddrs: s.Addrs(), DialTimeout: time.Second,
		TLS: TLS{Enabled: true, CAFile: ca.File, CertFile: ccert, KeyFile: ckey}}
	chans := []string{"reports", "item:1"}
	f2 := runFailover(t, optionsClient(t, o), chans, s.Primary(t).Kill)
	f2.log(t)
}
