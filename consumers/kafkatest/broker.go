package kafkatest

import (
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is an embedded Kafka-protocol broker reached only through a Proxy.
type Broker struct {
	// Addr is the bootstrap address for clients: the proxy's. The broker
	// advertises it in metadata too, so no client connection bypasses the
	// proxy.
	Addr string
	// Proxy sits between every client and the broker; its faults are the
	// broker's, as clients see them.
	Proxy *Proxy
	// Cluster is the kfake cluster behind the proxy.
	Cluster *kfake.Cluster
}

// Brokers returns Addr as a broker list, for the Config of a consumer or
// producer.
func (b *Broker) Brokers() []string { return []string{b.Addr} }

// StartBroker starts a one-broker kfake cluster with topics of partitions
// partitions each, behind a Proxy. opts are passed on to kfake (for example
// kfake.GroupMinSessionTimeout); they must not set Ports, ListenFn or
// NumBrokers, which StartBroker uses. The broker and the proxy are closed
// when the test ends.
func StartBroker(t testing.TB, partitions int32, topics []string, opts ...kfake.Opt) *Broker {
	t.Helper()
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kafkatest: listen: %v", err)
	}
	p, err := NewProxy(real.Addr().String())
	if err != nil {
		real.Close()
		t.Fatalf("kafkatest: proxy: %v", err)
	}
	// The broker advertises its listener's Addr: give it the proxy's. kfake
	// asks to listen on the proxy's port (from Ports); it gets the real
	// listener instead.
	ln := advertised{Listener: real, addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p.Port()}}
	all := append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(p.Port()),
		kfake.ListenFn(func(string, string) (net.Listener, error) { return ln, nil }),
		kfake.SeedTopics(partitions, topics...),
	}, opts...)
	c, err := kfake.NewCluster(all...)
	if err != nil {
		real.Close()
		p.Close()
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(func() {
		p.Close()
		c.Close()
	})
	return &Broker{Addr: p.Addr(), Proxy: p, Cluster: c}
}

// advertised is a listener that reports another address as its own.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// IgnoreBrokerGoroutines are goleak options for a test binary that starts
// kfake brokers: a broker's per-connection goroutines end shortly after its
// Close, on their own schedule (on a loaded host after goleak's last retry),
// and they are the broker's, not the code under test.
func IgnoreBrokerGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write.func1"),
	}
}
