// Package kafkatest gives tests network faults between Kafka clients and a
// broker: a TCP Proxy that can pause, reset or blackhole its connections,
// and StartBroker, an embedded Kafka-protocol broker (kfake) that
// advertises the proxy's address, so every connection a kafka-go client
// makes, the bootstrap one and the ones it makes from metadata, passes
// through the proxy. The Proxy is plain TCP, so it can stand in front of
// Redis too.
package kafkatest

import (
	"net"
	"sync"
	"time"
)

// dialTimeout bounds the proxy's connection to its target.
const dialTimeout = 5 * time.Second

// mode is what the proxy does with the bytes it reads.
type mode int

const (
	modeForward   mode = iota // pass bytes on
	modePaused                // hold them until Resume or Heal
	modeBlackhole             // read and drop them
)

// Proxy forwards TCP connections from its own address on 127.0.0.1 to a
// target, and injects faults on command: Pause, Reset, Hangup, Blackhole, Refuse,
// and Resume or Heal back to normal. It is safe for concurrent use. Close ends
// every goroutine it started.
type Proxy struct {
	addr   string // fixed at NewProxy: Refuse and Heal listen on it again
	port   int
	target string

	mu      sync.Mutex
	ln      net.Listener // nil while refusing
	mode    mode
	changed chan struct{} // closed and replaced when mode changes
	links   map[*link]struct{}
	closed  bool

	wg sync.WaitGroup
}

// link is one client connection and, unless it was accepted in a
// blackhole, its connection to the target.
type link struct {
	client, server net.Conn // server is nil for a blackholed link
	done           chan struct{}
	once           sync.Once

	mu   sync.Mutex
	lost bool // bytes were dropped: the stream can not be resumed
}

// NewProxy listens on a free port of 127.0.0.1 and forwards every
// connection it accepts to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, target: target,
		ln: ln, changed: make(chan struct{}), links: map[*link]struct{}{},
	}
	p.wg.Go(func() { p.accept(ln) })
	return p, nil
}

// Addr is the proxy's host:port, for clients. It stays the same across
// Refuse and Heal.
func (p *Proxy) Addr() string { return p.addr }

// Port is the port of Addr.
func (p *Proxy) Port() int { return p.port }

// Pause stops forwarding bytes in both directions, on current and new
// connections, but keeps every connection open, like a network that
// stalls. What was read is held and forwarded, in order, by Resume.
func (p *Proxy) Pause() { p.setMode(modePaused) }

// Resume ends a Pause: held and new bytes flow again.
func (p *Proxy) Resume() { p.setMode(modeForward) }

// Blackhole makes the proxy a black hole: it keeps accepting connections
// and reads and drops everything in both directions, current connections
// included, and answers nothing, so a client sees only timeouts.
func (p *Proxy) Blackhole() { p.setMode(modeBlackhole) }

// Refuse makes the proxy look like a stopped broker: it resets every
// current connection and stops listening, so a new connection is refused
// (ECONNREFUSED) until Heal.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	p.Reset()
}

// Heal ends a Pause, a Blackhole or a Refuse. A connection that lost bytes
// to the blackhole (or was accepted in it) can not carry a valid stream any
// more, so Heal resets it; the client reconnects and gets a working one.
// After a Refuse, Heal listens on the same address again; it panics if it
// can not, since the test's broker address would then be gone.
func (p *Proxy) Heal() {
	p.setMode(modeForward)
	p.mu.Lock()
	if p.ln == nil && !p.closed {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			p.mu.Unlock()
			panic("kafkatest: listen again on " + p.addr + ": " + err.Error())
		}
		p.ln = ln
		p.wg.Go(func() { p.accept(ln) })
	}
	var lost []*link
	for l := range p.links {
		if l.isLost() || l.server == nil {
			lost = append(lost, l)
		}
	}
	p.mu.Unlock()
	for _, l := range lost {
		l.reset()
	}
}

// Reset closes every current connection abruptly, with a TCP RST to the
// client and to the target, like a broker or network that drops its
// connections. The proxy goes on accepting new ones, in whatever mode it
// is in.
func (p *Proxy) Reset() {
	for _, l := range p.openLinks() {
		l.reset()
	}
}

// Hangup closes every current connection gracefully (a FIN to both
// sides), as a broker that closes idle or unwanted connections does: a
// client reads EOF. New connections work as before.
func (p *Proxy) Hangup() {
	for _, l := range p.openLinks() {
		l.close()
	}
}

// openLinks is a copy of the proxy's current connections.
func (p *Proxy) openLinks() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	return links
}

// Close stops accepting, resets every connection and waits for the
// proxy's goroutines to end. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *Proxy) setMode(m mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == m {
		return
	}
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
}

// current returns the mode and the channel closed when it next changes.
func (p *Proxy) current() (mode, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.changed
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Refuse or Close
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve connects c to the target (unless the proxy is a black hole) and
// pipes both ways until either side ends.
func (p *Proxy) serve(c net.Conn) {
	l := &link{client: c, done: make(chan struct{})}
	if m, _ := p.current(); m != modeBlackhole {
		s, err := net.DialTimeout("tcp", p.target, dialTimeout)
		if err != nil {
			rst(c) // the target refused: so does the proxy
			return
		}
		l.server = s
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.reset()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(l, l.client, l.server) })
	if l.server != nil {
		wg.Go(func() { p.pipe(l, l.server, l.client) })
	}
	wg.Wait()
}

// pipe copies src to dst, as the mode allows, until src or dst fails;
// then it closes the link. dst is nil for a blackholed link.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(l, dst, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// forward writes b to dst when the mode allows, holds it while paused and
// drops it in a black hole. It reports false when the link is finished.
func (p *Proxy) forward(l *link, dst net.Conn, b []byte) bool {
	for {
		m, changed := p.current()
		switch {
		case m == modeBlackhole || dst == nil:
			l.mu.Lock()
			l.lost = true
			l.mu.Unlock()
			return true
		case m == modePaused:
			select {
			case <-changed:
			case <-l.done:
				return false
			}
		default:
			_, err := dst.Write(b)
			return err == nil
		}
	}
}

func (l *link) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// close ends the link gracefully (FIN), as when one side closed.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		if l.server != nil {
			_ = l.server.Close()
		}
	})
}

// reset ends the link with an RST to both sides.
func (l *link) reset() {
	l.once.Do(func() {
		close(l.done)
		rst(l.client)
		if l.server != nil {
			rst(l.server)
		}
	})
}

// rst closes c so that the peer gets a TCP RST rather than a FIN.
func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
