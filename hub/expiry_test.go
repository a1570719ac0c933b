package hub

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
)

type pipeNet struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeNet() *pipeNet {
	return &pipeNet{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeNet) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *pipeNet) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *pipeNet) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

func (p *pipeNet) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	cli, srv := net.Pipe()
	select {
	case p.conns <- srv:
		return cli, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestCredentialExpiry: a connection whose credential expires (a 6 s
// session, on a fake clock) ends then and not before: a WebSocket with
// close 1008 "expired", an SSE stream with "event: expired" and its end.
// A connection admitted without an expiry goes on.
func TestCredentialExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := NewMemory(MemoryConfig{})
		h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
		g := &countingGuard{ttl: map[string]time.Duration{"session": 6 * time.Second}}
		mux := http.NewServeMux()
		mux.Handle("/v1/ws", h.WSHandler(WSConfig{Guard: g, PingInterval: 24 * time.Hour}))
		mux.Handle("/v1/sse", h.SSEHandler(SSEConfig{Guard: g, Heartbeat: 24 * time.Hour}))
		pn := newPipeNet()
		srv := &http.Server{Handler: mux}
		go srv.Serve(pn)
		tr := &http.Transport{DialContext: pn.dial}
		hc := &http.Client{Transport: tr}

		ws := func(token string) *websocket.Conn {
			conn, _, err := websocket.Dial(t.Context(), "ws://switchboard/v1/ws?access_token="+token,
				&websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports"}`)
			if f := readFrame(t, conn); f["type"] != "ack" {
				t.Fatalf("got %v", f)
			}
			return conn
		}
		sse := func(token string) (*bufio.Reader, io.Closer) {
			resp, err := hc.Get("http://switchboard/v1/sse?channel=reports&access_token=" + token)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			sseBlock(t, br) // retry and the starting id
			return br, resp.Body
		}
		wsSession, wsForever := ws("session"), ws("forever")
		sseSession, sseSessionBody := sse("session")
		sseForever, sseForeverBody := sse("forever")
		expiry := time.Unix(0, g.expiry.Load())

		// Every connection is alive just before the session ends.
		time.Sleep(6*time.Second - time.Millisecond)
		if err := h.Publish(t.Context(), []string{"reports"}, testEvent(1, "item.reported", "item-1", "")); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*websocket.Conn{wsSession, wsForever} {
			if f := readFrame(t, c); f["type"] != "event" {
				t.Fatalf("got %v", f)
			}
		}
		for _, br := range []*bufio.Reader{sseSession, sseForever} {
			if b := sseBlock(t, br); !strings.Contains(b, "event: item.reported") {
				t.Fatalf("got %q", b)
			}
		}

		// At 6 s the session's connections end; the others go on.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, _, err := wsSession.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "expired" {
			t.Fatalf("session WebSocket: %v, want close 1008 expired", err)
		}
		if b := sseBlock(t, sseSession); b != "event: expired\ndata: {\"reason\":\"expired\"}\n" {
			t.Fatalf("session SSE: %q, want the expired event", b)
		}
		if _, err := sseSession.ReadByte(); err != io.EOF {
			t.Fatalf("session SSE after the expired event: %v, want its end", err)
		}
		if now := time.Now(); !now.Equal(expiry) {
			t.Fatalf("ended %v after the expiry", now.Sub(expiry))
		}
		time.Sleep(time.Minute)
		if err := h.Publish(t.Context(), []string{"reports"}, testEvent(2, "item.reported", "item-1", "")); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, wsForever); f["type"] != "event" {
			t.Fatalf("got %v", f)
		}
		if b := sseBlock(t, sseForever); !strings.Contains(b, "event: item.reported") {
			t.Fatalf("got %q", b)
		}
		synctest.Wait()
		if n := h.Clients(); n != 2 {
			t.Fatalf("%d clients, want the 2 without an expiry", n)
		}

		wsForever.Close(websocket.StatusNormalClosure, "")
		sseSessionBody.Close()
		sseForeverBody.Close()
		if err := h.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		tr.CloseIdleConnections()
		srv.Close()
		mem.Close()
	})
}

// sseBlock reads one block of an SSE stream, without its blank line.
func sseBlock(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE: %v after %q", err, b.String())
		}
		if line == "\n" {
			return b.String()
		}
		b.WriteString(line)
	}
}

// registered counts the channels the hub's registry and the memory
// backplane hold entries for.
