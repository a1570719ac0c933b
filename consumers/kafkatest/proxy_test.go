package kafkatest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, IgnoreBrokerGoroutines()...)
}

// waitLong bounds every wait; tests wait for conditions, so this only
// decides how long a broken test hangs.
const waitLong = 15 * time.Second

// echoServer echoes every line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// client is one line-oriented connection through a proxy.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, p *Proxy) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), waitLong)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) send(line string) {
	c.t.Helper()
	_ = c.c.SetWriteDeadline(time.Now().Add(waitLong))
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		c.t.Fatalf("write %q: %v", line, err)
	}
}

// read reads one line, waiting at most d.
func (c *client) read(d time.Duration) (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func (c *client) expect(want string) {
	c.t.Helper()
	got, err := c.read(waitLong)
	if err != nil || got != want {
		c.t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyForwards(t *testing.T) {
	p := newProxy(t, echoServer(t))
	a, b := dial(t, p), dial(t, p)
	a.send("one")
	b.send("two")
	a.expect("one")
	b.expect("two")
}

func TestProxyPauseResume(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	c.send("before")
	c.expect("before")

	p.Pause()
	c.send("held")
	if got, err := c.read(200 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("paused: read %q, %v; want a timeout", got, err)
	}
	late := dial(t, p) // accepted while paused: connected, but silent
	late.send("late")
	if got, err := late.read(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("paused, new connection: read %q, %v; want a timeout", got, err)
	}

	p.Resume()
	// The same connections: what was held arrives, and more flows.
	c.expect("held")
	c.send("after")
	c.expect("after")
	late.expect("late")
}

func TestProxyReset(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	c.send("x")
	c.expect("x")

	p.Reset()
	_, err := c.read(waitLong)
	if err == nil || isTimeout(err) {
		t.Fatalf("after reset: read error %v, want the connection reset", err)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after reset: %v, want ECONNRESET (an RST, not a FIN)", err)
	}

	// New connections still work.
	again := dial(t, p)
	again.send("y")
	again.expect("y")
}

func TestProxyHangup(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	c.send("x")
	c.expect("x")

	p.Hangup()
	if got, err := c.read(waitLong); !errors.Is(err, io.EOF) {
		t.Fatalf("after hangup: read %q, %v; want EOF (a FIN, not an RST)", got, err)
	}

	// New connections still work.
	again := dial(t, p)
	again.send("y")
	again.expect("y")
}

func TestProxyBlackholeHeal(t *testing.T) {
	p := newProxy(t, echoServer(t))
	old := dial(t, p)
	old.send("a")
	old.expect("a")

	p.Blackhole()
	old.send("dropped")
	if got, err := old.read(200 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed connection: read %q, %v; want a timeout", got, err)
	}
	// A new connection is accepted and swallows what it is sent.
	c := dial(t, p)
	c.send("into the void")
	if got, err := c.read(200 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection in the blackhole: read %q, %v; want a timeout", got, err)
	}

	p.Heal()
	// Both lost bytes, so both are reset; a fresh connection works.
	for _, cl := range []*client{old, c} {
		if _, err := cl.read(waitLong); err == nil || isTimeout(err) {
			t.Errorf("a connection that lost bytes: %v after heal, want it closed", err)
		}
	}
	fresh := dial(t, p)
	fresh.send("b")
	fresh.expect("b")
}

func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newProxy(t, addr)
	// The proxy accepts, fails to reach the target and resets: the client
	// sees that at connect or at its first read.
	c, err := net.DialTimeout("tcp", p.Addr(), waitLong)
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("target down: dial %v, want a reset", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("target down: read error %v, want the connection closed", err)
	}
}

func TestProxyClose(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	p.Pause() // a pipe waits on the pause: Close must end it too
	c.send("x")
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

// TestStartBroker checks that kafka-go reaches the broker only through the
// proxy: with the proxy blackholed, a write fails, though the broker
// itself is up; healed, writes and reads go through again.
func TestStartBroker(t *testing.T) {
	const topic = "t"
	b := StartBroker(t, 2, []string{topic})
	if got := b.Cluster.ListenAddrs(); len(got) != 1 || got[0] != b.Addr {
		t.Fatalf("broker advertises %v, want the proxy %s", got, b.Addr)
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr), Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: tr, MaxAttempts: 1, WriteTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}
	defer w.Close()

	write := func(ctx context.Context, v string) error {
		return w.WriteMessages(ctx, kafka.Message{Topic: topic, Value: []byte(v)})
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	// writeEventually retries: one attempt has 300 ms, which a loaded
	// host can take to schedule the broker.
	writeEventually := func(v string) {
		t.Helper()
		deadline := time.Now().Add(waitLong)
		for err := write(ctx, v); err != nil; err = write(ctx, v) {
			if time.Now().After(deadline) {
				t.Fatalf("write %s: %v", v, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	writeEventually("1")

	b.Proxy.Blackhole()
	short, scancel := context.WithTimeout(ctx, time.Second)
	if err := write(short, "lost"); err == nil {
		t.Fatal("write through a blackholed proxy succeeded: a connection bypasses the proxy")
	}
	scancel()

	b.Proxy.Heal()
	writeEventually("2")

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Brokers(), GroupID: "g", Topic: topic, StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	seen := map[string]bool{}
	for !seen["1"] || !seen["2"] {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read: %v (seen %v)", err, seen)
		}
		seen[string(m.Value)] = true
	}
}

func TestProxyRefuseHeal(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	c.send("x")
	c.expect("x")

	p.Refuse()
	if _, err := c.read(waitLong); err == nil || isTimeout(err) {
		t.Fatalf("after refuse: read error %v, want the connection reset", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), waitLong); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want ECONNREFUSED", err)
	}

	p.Heal()
	again := dial(t, p)
	again.send("y")
	again.expect("y")
}
