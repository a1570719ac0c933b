package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// Buffer sizes of a hijacked connection. net/http hands a hijacker its 4 KiB
// read and write buffers, which a long-lived idle connection would hold for
// its whole life; these are what a connection of small frames needs.
const (
	hijackReadBuffer  = 512
	hijackWriteBuffer = 2048
)

// smallBuffers is a ResponseWriter whose Hijack swaps net/http's buffers for
// small ones, keeping any bytes the client already sent.
type smallBuffers struct {
	http.ResponseWriter
}

func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
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
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, hijackWriteBuffer)), nil
}
