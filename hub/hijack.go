package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/hub/internal/cork"
)

// Buffer sizes of a hijacked connection. net/http hands a hijacker its 4 KiB
// read and write buffers, which a long-lived idle connection would hold for
// its whole life; these are what a connection of small frames needs.
const (
	hijackReadBuffer  = 512
	hijackWriteBuffer = 2048
)

// smallBuffers is a ResponseWriter whose Hijack swaps net/http's buffers for
// small ones, keeping any bytes the client already sent, and makes the
// connection corkable: the WebSocket library flushes its buffer after every
// message, into the cork while the writer writes a batch. It keeps the
// hijacked connection, which the door's writer corks and whose write
// deadline it may cut short.
type smallBuffers struct {
	http.ResponseWriter
	writes *atomic.Uint64 // counts the connection's writes
	conn   *cork.Conn
}

func (s *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	// Bytes the client sent right behind its request stay buffered in the
	// new reader, where the WebSocket library looks for them.
	n := brw.Reader.Buffered()
	b, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn), max(hijackReadBuffer, n))
	if n > 0 {
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	s.conn = cork.New(conn, s.writes)
	return s.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(s.conn, hijackWriteBuffer)), nil
}

// slowCloseTimeout is how long a connection that ended as a slow consumer
// gets to take the frame in flight and the close (or the end of the SSE
// response) before it is dropped: a client that is still reading, only too
// slowly, sees why it was disconnected.
const slowCloseTimeout = time.Second

// cutoff is the write deadline of a connection, which another goroutine may
// cut short when the connection ends as a slow consumer while its writer is
// blocked on a full socket.
type cutoff struct {
	conn deadliner
	at   atomic.Int64 // unix nanoseconds; 0 until cut
}

// deadliner is what takes a write deadline: a net.Conn, or the
// http.ResponseController of a held stream.
type deadliner interface {
	SetWriteDeadline(time.Time) error
}

// set makes t the write deadline (zero: none), or keeps the cut-off if
// there is one.
func (c *cutoff) set(t time.Time) {
	_ = c.conn.SetWriteDeadline(t)
	if at := c.at.Load(); at != 0 {
		// Cut meanwhile: the cut-off stands, whichever call came last.
		_ = c.conn.SetWriteDeadline(time.Unix(0, at))
	}
}

// cut bounds every write in flight or still to come to d from now, once.
// It does not block: a door calls it from the client's notify.
func (c *cutoff) cut(d time.Duration) {
	t := time.Now().Add(d)
	if c.conn != nil && c.at.CompareAndSwap(0, t.UnixNano()) {
		_ = c.conn.SetWriteDeadline(t)
	}
}

// isCut reports whether cut was called.
func (c *cutoff) isCut() bool { return c.at.Load() != 0 }
