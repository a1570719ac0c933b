package cork

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
)

// recorder records every write it is given.
type recorder struct {
	net.Conn // nil: only Write and Close are called
	writes   [][]byte
	closed   bool
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recorder) Close() error { r.closed = true; return nil }

func TestCork(t *testing.T) {
	var n atomic.Uint64
	r := &recorder{}
	c := New(r, &n)
	c.Write([]byte("a"))
	if len(r.writes) != 1 {
		t.Fatal("an uncorked write was held")
	}
	c.Cork()
	c.Write([]byte("b"))
	c.Append(func(b []byte) []byte { return append(b, "c"...) })
	c.Write([]byte("d"))
	if len(r.writes) != 1 || c.buf == nil {
		t.Fatal("a corked write went out")
	}
	if err := c.Uncork(); err != nil || len(r.writes) != 2 || string(r.writes[1]) != "bcd" || c.buf != nil {
		t.Fatalf("uncorked into %q, buffer kept: %v", r.writes, c.buf != nil)
	}
	if n.Load() != 2 {
		t.Fatalf("counted %d writes, want 2", n.Load())
	}
}

func TestCorkBound(t *testing.T) {
	r := &recorder{}
	c := New(r, nil)
	c.Cork()
	frame := bytes.Repeat([]byte("x"), 1000)
	for range 3 * Bound / len(frame) {
		c.Write(frame)
	}
	big := bytes.Repeat([]byte("y"), Bound+1)
	c.Write(big)
	c.Uncork()
	total := 0
	for _, w := range r.writes {
		if len(w) > Bound+1 {
			t.Fatalf("a write of %d bytes, over the bound", len(w))
		}
		total += len(w)
	}
	if total != 3*Bound/len(frame)*len(frame)+len(big) || !bytes.Equal(r.writes[len(r.writes)-1], big) {
		t.Fatalf("%d bytes in %d writes, the last %d", total, len(r.writes), len(r.writes[len(r.writes)-1]))
	}
}

// TestCloseFlushes checks that what is collected (a close frame written
// while corked) leaves before the connection closes.
func TestCloseFlushes(t *testing.T) {
	r := &recorder{}
	c := New(r, nil)
	c.Cork()
	c.Write([]byte("close"))
	c.Close()
	if len(r.writes) != 1 || string(r.writes[0]) != "close" || !r.closed {
		t.Fatalf("wrote %q, closed %v", r.writes, r.closed)
	}
}
