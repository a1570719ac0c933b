// Package cork coalesces a connection's writes: while corked, what is
// written is collected in a buffer borrowed from a pool, and leaves in one
// write when uncorked (or earlier, in bounded pieces, when it grows past
// the bound). An idle connection holds no buffer.
package cork

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Bound is how many bytes a corked connection collects before it writes
// them out early: the cork buffer of a connection is at most Bound plus
// one frame.
const Bound = 64 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// Writer is an io.Writer whose writes can be corked. Write and Append may
// be called from several goroutines (a writer, a protocol ping, a pong
// from the reader); Cork and Uncork belong to one writer.
type Writer struct {
	out    io.Writer
	writes *atomic.Uint64 // counts the writes on out, if not nil

	mu     sync.Mutex
	corked bool
	buf    *[]byte // borrowed while something is collected
}

// NewWriter returns w with corkable writes; every write on w adds 1 to
// writes (nil: not counted).
func NewWriter(w io.Writer, writes *atomic.Uint64) *Writer {
	c := &Writer{}
	c.Init(w, writes)
	return c
}

// Init makes a zero Writer, one embedded in a larger struct, write to w as
// NewWriter's does.
func (c *Writer) Init(w io.Writer, writes *atomic.Uint64) {
	c.out, c.writes = w, writes
}

// Conn is a net.Conn whose writes can be corked.
type Conn struct {
	net.Conn
	Writer
}

// New returns c with corkable writes, counted in writes as NewWriter's.
func New(c net.Conn, writes *atomic.Uint64) *Conn {
	cc := &Conn{Conn: c}
	cc.Writer.Init(c, writes)
	return cc
}

// Write writes p as Writer.Write does.
func (c *Conn) Write(p []byte) (int, error) { return c.Writer.Write(p) }

// Close writes what is collected, if no write is in flight, and closes
// the connection: a close frame the WebSocket library writes and then
// closes on is not lost in the buffer. A write in flight (blocked on a
// full socket) is not waited for: Close is how it is cut short.
func (c *Conn) Close() error {
	if c.mu.TryLock() {
		c.corked = false
		_ = c.flushLocked()
		c.mu.Unlock()
	}
	return c.Conn.Close()
}

// Cork makes writes collect until Uncork.
func (c *Writer) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was collected, in one write, and returns the buffer
// to the pool.
func (c *Writer) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// Write writes p, or collects it while corked. A write larger than the
// bound goes alone, after what was collected before it.
func (c *Writer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.write(p)
	}
	if c.buf != nil && len(*c.buf)+len(p) > Bound {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= Bound {
		return c.write(p)
	}
	c.borrow()
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// Append collects what add appends to the buffer, writing it out once it
// reaches the bound; uncorked, it is written at once. It spares a frame
// encoder a buffer of its own.
func (c *Writer) Append(add func([]byte) []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.borrow()
	*c.buf = add(*c.buf)
	if !c.corked || len(*c.buf) >= Bound {
		return c.flushLocked()
	}
	return nil
}

func (c *Writer) borrow() {
	if c.buf == nil {
		c.buf = GetBuffer()
	}
}

// flushLocked writes what is collected and gives the buffer back.
func (c *Writer) flushLocked() error {
	b := c.buf
	if b == nil {
		return nil
	}
	c.buf = nil
	var err error
	if len(*b) > 0 {
		_, err = c.write(*b)
	}
	PutBuffer(b)
	return err
}

func (c *Writer) write(p []byte) (int, error) {
	if c.writes != nil {
		c.writes.Add(1)
	}
	return c.out.Write(p)
}

// GetBuffer borrows an empty buffer from the pool the cork uses, for a
// frame built only while a batch is written.
func GetBuffer() *[]byte { return pool.Get().(*[]byte) }

// PutBuffer returns a buffer from GetBuffer; one grown past twice the
// bound is dropped instead.
func PutBuffer(b *[]byte) {
	if cap(*b) <= 2*Bound {
		*b = (*b)[:0]
		pool.Put(b)
	}
}
