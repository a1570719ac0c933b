package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timings of the servers the tests start: low, so a failover takes about a
// second rather than the production defaults' half a minute. They are
// settings of the servers, not test thresholds.
const (
	// ClusterNodeTimeout is cluster-node-timeout: how long a Cluster
	// master may not answer before its replica takes over.
	ClusterNodeTimeout = 500 * time.Millisecond
	// SentinelDownAfter is down-after-milliseconds: how long a primary may
	// not answer before the sentinels promote a replica.
	SentinelDownAfter = 500 * time.Millisecond
)

// Node is one redis-server (or sentinel) child process on a loopback port,
// in its own directory, killed when the test ends.
type Node struct {
	// Addr is 127.0.0.1:<port>.
	Addr string
	Port int
	bin  string
	args []string
	dir  string
	cmd  *exec.Cmd
	exit chan struct{}
	tls  *tls.Config // of Client, for a TLS node
}

// Client opens a client of the node alone; the caller closes it.
func (n *Node) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: n.tls})
}

// start starts the process and waits until it answers a PING.
func (n *Node) start(t testing.TB) {
	t.Helper()
	n.cmd = exec.Command(n.bin, n.args...)
	n.cmd.Dir = n.dir
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { cmd.Wait(); close(exit) }(n.cmd, n.exit)
	c := n.Client()
	defer c.Close()
	if err := awaitPing(c, n.exit); err != nil {
		t.Fatalf("%s on %s: %v (%v)\n%s", filepath.Base(n.bin), n.Addr, err, n.cmd.ProcessState, n.Log())
	}
}

// Kill kills the node with SIGKILL, as a crash would, and waits for it to
// exit. Its data is gone with it (no persistence).
func (n *Node) Kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.exit
	}
}

// Pid is the node's process ID (0 before it started).
func (n *Node) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Log is the node's log file.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	return string(b)
}

// need returns the path of the binary, skipping the test without it (or
// failing it in CI).
func need(t testing.TB, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatalf("%s is required in CI (.ci/run installs it)", bin)
		}
		t.Skipf("%s not installed", bin)
	}
	return p
}

// freePort returns a loopback port that is free, and whose port+10000 (a
// Cluster node's bus port) is free too.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p
	}
	t.Fatal("no free port pair")
	return 0
}

// newNode starts redis-server on a free port with args (after the common
// ones), in a directory of its own.
func newNode(t testing.TB, bin string, args ...string) *Node {
	t.Helper()
	return newNodeTLS(t, bin, nil, args...)
}

// newNodeTLS is newNode; with ct it listens for TLS only, and its Client
// uses ct.
func newNodeTLS(t testing.TB, bin string, ct *TLSFiles, args ...string) *Node {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	n := &Node{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, bin: bin, dir: dir}
	listen := []string{"--port", strconv.Itoa(port)}
	if ct != nil {
		listen = []string{"--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", ct.ServerCert, "--tls-key-file", ct.ServerKey, "--tls-ca-cert-file", ct.CA,
			"--tls-auth-clients", "yes",
			// Its certificate as a client of the other nodes (the
			// server's is for server authentication only).
			"--tls-client-cert-file", ct.ClientCert, "--tls-client-key-file", ct.ClientKey}
		n.tls = ct.client(t)
	}
	if slices.Contains(args, "--cluster-enabled") {
		// Said, since with --port 0 it would be 10000 for every node.
		listen = append(listen, "--cluster-port", strconv.Itoa(port+10000))
	}
	n.args = append(append(listen, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")), args...)
	n.start(t)
	t.Cleanup(n.Kill)
	return n
}

// TLSFiles are the PEM files of a TLS server and of its clients, all
// signed by CA.
type TLSFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

func (f *TLSFiles) client(t testing.TB) *tls.Config {
	pem, err := os.ReadFile(f.CA)
	if err != nil && t != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil && t != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// StartTLSServer starts one redis-server that speaks TLS only and requires
// a client certificate (tls-auth-clients yes).
func StartTLSServer(t testing.TB, f *TLSFiles) *Node {
	t.Helper()
	return newNodeTLS(t, need(t, "redis-server"), f)
}

// Cluster is a Redis Cluster of redis-server child processes on loopback.
type Cluster struct {
	Nodes []*Node
	tls   *TLSFiles
}

// StartCluster starts masters×(1+replicas) nodes and joins them into a
// Cluster with redis-cli --cluster create, then waits until every node
// says the cluster is ok and every replica is in sync. Without redis-server
// or redis-cli it skips the test, or fails it in CI.
func StartCluster(t testing.TB, masters, replicas int, opts ...ClusterOption) *Cluster {
	t.Helper()
	return startCluster(t, masters, replicas, nil, opts...)
}

// ClusterOption changes a setting of the nodes StartCluster starts.
type ClusterOption func(*clusterSettings)

type clusterSettings struct {
	nodeTimeout time.Duration
}

// NodeTimeout sets the nodes' cluster-node-timeout (ClusterNodeTimeout
// without it). A test of a coordinated switch (CLUSTER FAILOVER), which
// does not wait on it, sets it long: with the short default, a machine
// that stalls for a second has the other nodes fail a live master over
// on their own, which loses the writes it took meanwhile, as any
// automatic failover of a live master may.
func NodeTimeout(d time.Duration) ClusterOption {
	return func(s *clusterSettings) { s.nodeTimeout = d }
}

// StartTLSCluster is StartCluster with every node speaking TLS only, to
// clients (which need a certificate), to each other and to replicas.
func StartTLSCluster(t testing.TB, masters, replicas int, f *TLSFiles) *Cluster {
	t.Helper()
	return startCluster(t, masters, replicas, f)
}

func startCluster(t testing.TB, masters, replicas int, f *TLSFiles, opts ...ClusterOption) *Cluster {
	t.Helper()
	set := clusterSettings{nodeTimeout: ClusterNodeTimeout}
	for _, o := range opts {
		o(&set)
	}
	srv := need(t, "redis-server")
	cli := need(t, "redis-cli")
	c := &Cluster{tls: f}
	args := []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(set.nodeTimeout.Milliseconds())),
		// A replica may take over however long ago it last heard its
		// master: the tests kill masters at any moment.
		"--cluster-replica-validity-factor", "0",
		"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
	var cliTLS []string
	if f != nil {
		args = append(args, "--tls-cluster", "yes", "--tls-replication", "yes")
		cliTLS = []string{"--tls", "--cacert", f.CA, "--cert", f.ClientCert, "--key", f.ClientKey}
	}
	for range masters * (1 + replicas) {
		c.Nodes = append(c.Nodes, newNodeTLS(t, srv, f, args...))
	}
	create := append(cliTLS, "--cluster", "create")
	create = append(create, c.Addrs()...)
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), ownWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(t)
	return c
}

// Addrs are the addresses of every node.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Client opens a cluster client; the caller closes it (or hands it to a
// bus, which does).
func (c *Cluster) Client() *redis.ClusterClient {
	o := &redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: time.Second}
	if c.tls != nil {
		o.TLSConfig = c.tls.client(nil)
	}
	return redis.NewClusterClient(o)
}

// Node returns the node of addr.
func (c *Cluster) Node(addr string) *Node {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// MasterOf returns the node that is the master of key's slot now.
func (c *Cluster) MasterOf(t testing.TB, key string) *Node {
	t.Helper()
	cc := c.Client()
	defer cc.Close()
	m, err := cc.MasterForKey(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Node(m.Options().Addr)
}

// WaitOK waits until every live node reports cluster_state:ok, every slot
// is served by a master that answers, every master's replicas are
// connected and in sync, and every live node sees every other one as it
// sees itself (master, or replica of the same master), flagged neither
// failing nor in handshake. A master that has not yet heard, on the
// cluster bus, that a node is its replica ignores that replica's CLUSTER
// FAILOVER: with a long cluster-node-timeout, gossip can take seconds to
// say so after the cluster was made.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(ownWait)
	var why string
	for time.Now().Before(deadline) {
		if why = c.notOK(t.Context()); why == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("cluster not ok: %s", why)
}

func (c *Cluster) notOK(ctx context.Context) string {
	views := map[string][]nodeLine{}
	self := map[string]nodeLine{}
	for _, n := range c.Nodes {
		select {
		case <-n.exit:
			continue // killed
		default:
		}
		cl := n.Client()
		info, err := cl.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = fmt.Errorf("cluster_state not ok")
		}
		var repl, nodes string
		if err == nil {
			repl, err = cl.Info(ctx, "replication").Result()
		}
		if err == nil {
			nodes, err = cl.ClusterNodes(ctx).Result()
		}
		cl.Close()
		if err != nil {
			return n.Addr + ": " + err.Error()
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return n.Addr + ": replica not in sync"
		}
		if strings.Contains(repl, "role:slave") && strings.Contains(repl, "master_sync_in_progress:1") {
			return n.Addr + ": replica syncing"
		}
		for _, l := range parseNodes(nodes) {
			if l.myself {
				self[l.id] = l
			}
			views[n.Addr] = append(views[n.Addr], l)
		}
	}
	for addr, view := range views {
		for _, l := range view {
			me, live := self[l.id]
			switch {
			case !live:
			case l.role != me.role:
				return fmt.Sprintf("%s sees %s as %q, it is %q", addr, l.id, l.role, me.role)
			case l.unsettled:
				return fmt.Sprintf("%s sees %s failing or in handshake", addr, l.id)
			}
		}
	}
	return ""
}

// nodeLine is one line of CLUSTER NODES: a node's ID, its role ("master",
// or "replica of <master ID>"), whether it is the node asked, and whether
// it is flagged failing or in handshake.
type nodeLine struct {
	id, role          string
	myself, unsettled bool
}

func parseNodes(out string) []nodeLine {
	var ls []nodeLine
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		flags := strings.Split(f[2], ",")
		l := nodeLine{id: f[0], role: "master", myself: slices.Contains(flags, "myself")}
		if slices.Contains(flags, "slave") {
			l.role = "replica of " + f[3]
		}
		l.unsettled = slices.ContainsFunc(flags, func(s string) bool {
			return s == "fail" || s == "fail?" || s == "handshake" || s == "noaddr"
		})
		ls = append(ls, l)
	}
	return ls
}

// ID is the node's Cluster node ID.
func (n *Node) ID(t testing.TB) string {
	t.Helper()
	c := n.Client()
	defer c.Close()
	id, err := c.ClusterMyID(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// MoveSlot migrates slot, with its keys, from its master to the master
// to, as redis-cli --cluster reshard does: IMPORTING and MIGRATING, MIGRATE
// of every key, then SETSLOT NODE on every master.
func (c *Cluster) MoveSlot(t testing.TB, slot int, from, to *Node) {
	t.Helper()
	ctx := t.Context()
	fromID, toID := from.ID(t), to.ID(t)
	fc, tc := from.Client(), to.Client()
	defer fc.Close()
	defer tc.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(fc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	for {
		keys, err := fc.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(fc.Do(ctx, args...).Err())
	}
	for _, n := range c.Nodes {
		nc := n.Client()
		role, err := nc.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			must(nc.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
		}
		nc.Close()
	}
}

// StartServer starts one plain redis-server on a loopback port, killed
// when the test ends. Without redis-server it skips the test, or fails it
// in CI.
func StartServer(t testing.TB) *Node {
	t.Helper()
	return newNode(t, need(t, "redis-server"))
}

// ReplicaOf returns a replica of master.
func (c *Cluster) ReplicaOf(t testing.TB, master *Node) *Node {
	t.Helper()
	for _, n := range c.Nodes {
		if n == master {
			continue
		}
		nc := n.Client()
		repl, err := nc.Info(t.Context(), "replication").Result()
		nc.Close()
		if err == nil && strings.Contains(repl, "role:slave") && strings.Contains(repl, "master_port:"+strconv.Itoa(master.Port)+"\r\n") {
			return n
		}
	}
	t.Fatalf("no replica of %s", master.Addr)
	return nil
}
