package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/hub/internal/cork"
)

// Subprotocol is the WebSocket subprotocol of the contract.
const Subprotocol = "switchboard.v1"

// Close codes of the contract beyond RFC 6455's.
const (
	// StatusSlowConsumer closes a connection whose queue overflowed.
	StatusSlowConsumer websocket.StatusCode = 4000
)

// Defaults for WSConfig.
const (
	DefaultWSPingInterval    = 25 * time.Second
	DefaultWSMaxMessageBytes = 64 << 10
	DefaultWSWriteTimeout    = 10 * time.Second
	// maxBatchFrames and maxBatchBytes cap one packed message.
	maxBatchFrames = 256
	maxBatchBytes  = 32000 // under the 32 KiB read limit common clients default to
	// MaxRequestIDBytes caps a client frame's id (its JSON text): the server
	// echoes the id in every answer, so a longer one is refused (an error
	// frame without the id) instead of copied into the client's queue.
	MaxRequestIDBytes = 128
)

// Error codes of error frames.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeNotFound    = "not_found"
	CodeRateLimited = "rate_limited"
	CodeUnavailable = "unavailable"
)

// WSConfig configures the WebSocket door.
type WSConfig struct {
	// PingInterval is how often the server sends a protocol ping; a peer
	// that does not answer within it is dropped.
	PingInterval time.Duration
	// MaxMessageBytes caps a client message; a larger one closes with 1009.
	MaxMessageBytes int64
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration
	// OriginPatterns are the cross origins allowed to connect (host
	// patterns, or scheme://host); the request's own host is always allowed.
	OriginPatterns []string
	// Guard admits connections and authorises subscriptions; nil admits
	// everyone.
	Guard Guard
	// Frames handles frame types beyond subscribe, unsubscribe and ping:
	// the command layer registers its own ("takedown"). A type with no
	// handler is refused with an error frame.
	Frames map[string]FrameHandler
}

// FrameHandler handles one client frame of its type. It answers through
// s.Send and may subscribe the session's client to channels.
type FrameHandler func(ctx context.Context, s *Session, raw []byte)

// Session is one WebSocket connection as a FrameHandler sees it.
type Session struct {
	// Ctx is the connection's context: the Guard's, carrying who it is.
	Ctx context.Context
	// Client is the session's hub client.
	Client *Client
}

// Send queues a frame, marshalled as JSON, for the session.
func (s *Session) Send(frame any) {
	b, err := json.Marshal(frame)
	if err != nil {
		return
	}
	s.Client.Send(b)
}

// SendError queues an error frame answering request id.
func (s *Session) SendError(id json.RawMessage, code, msg string) {
	s.Send(ErrorFrame{Type: "error", ID: id, Code: code, Message: msg})
}

// ErrorFrame is the error frame of the protocol.
type ErrorFrame struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

// frameHead is what the door reads of every client frame to choose its
// handler: the type and the id. It is read like a strict frame, except that
// members it does not declare are left to the handler; a member that
// appears twice is refused here, so a second "type" can never pick another
// handler than the one whose decoder then reads the frame.
type frameHead struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id"`
}

// The hub's own client frames, read with DecodeStrict.
type (
	subscribeFrame struct {
		Type    string          `json:"type"`
		ID      json.RawMessage `json:"id,omitempty"`
		Channel string          `json:"channel"`
		Cursor  string          `json:"cursor,omitempty"`
		From    string          `json:"from,omitempty"`
	}
	unsubscribeFrame struct {
		Type    string          `json:"type"`
		ID      json.RawMessage `json:"id,omitempty"`
		Channel string          `json:"channel"`
	}
	pingFrame struct {
		Type string          `json:"type"`
		ID   json.RawMessage `json:"id,omitempty"`
	}
)

// wsClose ends a WebSocket with code and reason once what was queued before
// it is written.
type wsClose struct {
	code   websocket.StatusCode
	reason string
}

func (e *wsClose) Error() string { return "hub: websocket closed: " + e.reason }

type ackFrame struct {
	Type   string          `json:"type"`
	ID     json.RawMessage `json:"id,omitempty"`
	Cursor string          `json:"cursor,omitempty"`
}

// WSHandler serves GET /v1/ws with subprotocol switchboard.v1.
func (h *Hub) WSHandler(cfg WSConfig) http.Handler {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultWSPingInterval
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultWSMaxMessageBytes
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWSWriteTimeout
	}
	return &wsHandler{h: h, cfg: cfg}
}

type wsHandler struct {
	h   *Hub
	cfg WSConfig
}

func (wh *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isUpgrade(r) && !offers(r.Header, "Sec-WebSocket-Protocol", Subprotocol) {
		// Checked before the library's Accept, which would upgrade
		// without a subprotocol.
		WriteProblem(w, Problem{Type: ProblemBadRequest,
			Detail: "offer the WebSocket subprotocol " + Subprotocol + " (Sec-WebSocket-Protocol: " + Subprotocol + ")"})
		return
	}
	actx, release, aerr := admit(wh.cfg.Guard, r)
	if aerr != nil {
		release = func() {}
	}
	c, err := wh.h.NewClient()
	if err != nil {
		release()
		w.Header().Set("Retry-After", "1")
		Error(w, http.StatusServiceUnavailable, "shutting down: reconnect to another node")
		return
	}
	if aerr == nil {
		// Before the upgrade answers: a sign-out the client could make
		// once it sees the handshake must find the connection. Ended
		// before its writer starts, it closes as soon as it does.
		wh.h.bindSession(actx, c)
	}
	sb := &smallBuffers{ResponseWriter: w, writes: &wh.h.stats.Writes}
	conn, err := websocket.Accept(sb, r, &websocket.AcceptOptions{
		Subprotocols:   []string{Subprotocol},
		OriginPatterns: wh.cfg.OriginPatterns,
	})
	if err != nil {
		c.Close()
		release()
		return // Accept has answered (403 for a foreign origin).
	}
	if aerr != nil {
		// A browser cannot read an HTTP status from a failed upgrade, so
		// the refusal is a close code it can see.
		conn.Close(websocket.StatusPolicyViolation, Clip(aerr.Error(), clipName))
		c.Close()
		return
	}
	conn.SetReadLimit(wh.cfg.MaxMessageBytes)
	wh.h.stats.WSConnections.Add(1)
	// The connection outlives this handler: returning lets net/http drop
	// its request buffers and this goroutine's grown stack. The context
	// keeps who the caller is, not the request's cancellation.
	ctx, cancel := context.WithCancel(context.WithoutCancel(actx))
	d := &wsDoor{conn: conn, pack: r.URL.Query().Get("pack") == "1", interval: wh.cfg.PingInterval}
	d.init(c, d, &sb.conn.Writer, sb.conn, wh.cfg.WriteTimeout)
	if at, ok := ExpiryFrom(actx); ok {
		c.expireAt(at)
	}
	var ping heartbeat
	ping.start(wh.cfg.PingInterval, d.ping)
	d.start()
	go func() {
		defer release()
		defer cancel()
		wh.read(ctx, conn, &Session{Ctx: ctx, Client: c})
		c.CloseAfter(func() {
			d.wait()
			conn.CloseNow() // ends a ping in flight
			ping.stop()
			wh.h.stats.WSConnections.Add(-1)
		})
	}()
}

// read handles client frames until the connection ends. A frame that ends
// the connection (binary, invalid UTF-8, invalid JSON) is answered with its
// close code after everything queued before it.
func (wh *wsHandler) read(ctx context.Context, conn *websocket.Conn, s *Session) {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return // Too big (1009), closed by peer, or by the writer.
		}
		if typ != websocket.MessageText {
			s.Client.finish(&wsClose{websocket.StatusUnsupportedData, "binary frames are not supported"})
			return
		}
		if !utf8.Valid(data) {
			// RFC 6455 §8.1: a text frame must be UTF-8.
			s.Client.finish(&wsClose{websocket.StatusInvalidFramePayloadData, "invalid UTF-8"})
			return
		}
		if !json.Valid(data) {
			s.Client.finish(&wsClose{websocket.StatusInvalidFramePayloadData, "invalid JSON"})
			return
		}
		wh.handle(ctx, s, data)
	}
}

// handle answers one client frame: valid JSON, not yet known to be a frame.
func (wh *wsHandler) handle(ctx context.Context, s *Session, raw []byte) {
	if b := bytes.TrimLeft(raw, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		s.SendError(nil, CodeBadRequest, "a frame must be a JSON object")
		return
	}
	var head frameHead
	if err := decodeHead(raw, &head); err != nil {
		s.SendError(nil, CodeBadRequest, err.Error())
		return
	}
	if len(head.ID) > MaxRequestIDBytes {
		s.SendError(nil, CodeBadRequest, fmt.Sprintf("the id is over %d bytes", MaxRequestIDBytes))
		return
	}
	switch head.Type {
	case "ping":
		var f pingFrame
		if err := DecodeStrict(raw, &f); err != nil {
			s.SendError(head.ID, CodeBadRequest, err.Error()+": a ping frame has type and id")
			return
		}
		s.Send(ackFrame{Type: "pong", ID: f.ID})
	case "subscribe":
		var f subscribeFrame
		if err := DecodeStrict(raw, &f); err != nil {
			s.SendError(head.ID, CodeBadRequest, err.Error()+": a subscribe frame has type, id, channel, cursor and from")
			return
		}
		if f.From != "" && f.From != "oldest" {
			s.SendError(f.ID, CodeBadRequest, `"from" may only be "oldest"`)
			return
		}
		if err := ValidateChannel(f.Channel); err != nil {
			s.SendError(f.ID, CodeBadRequest, err.Error())
			return
		}
		if err := allow(wh.cfg.Guard, ctx, f.Channel); err != nil {
			s.SendError(f.ID, CodeForbidden, err.Error())
			return
		}
		var after *Position
		if f.From == "oldest" && f.Cursor == "" {
			after = &Position{}
		}
		if f.Cursor != "" {
			p, err := ParseCursor(f.Cursor)
			if err != nil {
				s.SendError(f.ID, CodeBadRequest, err.Error())
				return
			}
			after = &p
		}
		id := f.ID
		_, err := s.Client.Subscribe(ctx, f.Channel, SubscribeOptions{After: after, Ack: func(res SubscribeResult) []byte {
			b, _ := json.Marshal(ackFrame{Type: "ack", ID: id, Cursor: res.Start.String()})
			return b
		}})
		switch {
		case err == nil, errors.Is(err, ErrClosed):
		case errors.Is(err, ErrTooManyChannels):
			s.SendError(f.ID, CodeBadRequest, err.Error())
		default:
			s.SendError(f.ID, CodeUnavailable, "could not subscribe: backplane unavailable")
		}
	case "unsubscribe":
		var f unsubscribeFrame
		if err := DecodeStrict(raw, &f); err != nil {
			s.SendError(head.ID, CodeBadRequest, err.Error()+": an unsubscribe frame has type, id and channel")
			return
		}
		if err := ValidateChannel(f.Channel); err != nil {
			s.SendError(f.ID, CodeBadRequest, err.Error())
			return
		}
		pos, ok := s.Client.Unsubscribe(f.Channel)
		if !ok {
			s.SendError(f.ID, CodeNotFound, "not subscribed to "+f.Channel)
			return
		}
		s.Send(ackFrame{Type: "ack", ID: f.ID, Cursor: pos.String()})
	case "":
		s.SendError(head.ID, CodeBadRequest, `missing "type"`)
	default:
		if fh := wh.cfg.Frames[head.Type]; fh != nil {
			fh(ctx, s, raw)
			return
		}
		s.SendError(head.ID, CodeBadRequest, "unknown frame type "+clipQuote(head.Type))
	}
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return offers(r.Header, "Connection", "upgrade") && offers(r.Header, "Upgrade", "websocket")
}

// offers reports whether the comma-separated lists of header key hold
// token, in any case.
func offers(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func clipQuote(s string) string {
	b, _ := json.Marshal(Clip(s, clipName))
	return string(b)
}

// wsDoor is the WebSocket framing of the writer: one message per frame,
// or batch messages (?pack=1), and the contract's close codes. Protocol
// pings run from a heartbeat, outside the writer: a ping waits for its pong.
type wsDoor struct {
	writer
	conn     *websocket.Conn
	pack     bool
	interval time.Duration // of protocol pings
}

// write writes one drained batch. Writes carry no context of their own (a
// cancellable context costs a timer per frame in the library); the
// writer's deadline bounds them.
func (d *wsDoor) write(items []queueItem, _ bool) error {
	ctx := context.Background()
	if d.pack {
		return writePacked(ctx, d.conn, items, &d.cut)
	}
	for i := range items {
		if d.cut.isCut() {
			return nil // A slow consumer: the close comes next.
		}
		if err := d.conn.Write(ctx, websocket.MessageText, frameBytes(&items[i])); err != nil {
			return err
		}
	}
	return nil
}

// finish closes with the contract's code for err. A client closed by the
// door's reader (ErrClosed) needs none.
func (d *wsDoor) finish(err error) {
	var wc *wsClose
	switch {
	case err == ErrSlowConsumer:
		d.conn.Close(StatusSlowConsumer, "slow consumer: resume with your cursors")
	case err == ErrShutdown:
		d.conn.Close(websocket.StatusGoingAway, "going away: reconnect with your cursors")
	case err == ErrExpired:
		d.conn.Close(websocket.StatusPolicyViolation, "expired")
	case err == ErrSignedOut:
		d.conn.Close(websocket.StatusPolicyViolation, "signed out")
	case errors.As(err, &wc):
		d.conn.Close(wc.code, wc.reason)
	}
}

func (d *wsDoor) abort() { d.conn.CloseNow() }

// ping sends a protocol ping; a peer that does not answer within the ping
// interval is dropped.
func (d *wsDoor) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), d.interval)
	defer cancel()
	if err := d.conn.Ping(ctx); err != nil {
		d.conn.CloseNow()
		return false
	}
	return true
}

func frameBytes(it *queueItem) []byte {
	switch it.Kind {
	case itemEvent:
		return it.delivery.WSFrame()
	case itemGap:
		return []byte(`{"type":"gap","channel":"` + it.Channel + `"}`)
	default:
		return it.Raw
	}
}

// writePacked writes items as batch messages of what is already queued,
// capped in frames and bytes; a lone frame goes as itself. It stops early
// once cut is cut. The batch message is built in a buffer borrowed for the
// call, so an idle connection holds none.
func writePacked(ctx context.Context, conn *websocket.Conn, items []queueItem, cut *cutoff) error {
	var bp *[]byte
	defer func() {
		if bp != nil {
			cork.PutBuffer(bp)
		}
	}()
	for len(items) > 0 && !cut.isCut() {
		if len(items) == 1 {
			return conn.Write(ctx, websocket.MessageText, frameBytes(&items[0]))
		}
		if bp == nil {
			bp = cork.GetBuffer()
		}
		buf := append((*bp)[:0], `{"type":"batch","frames":[`...)
		n := 0
		for n < len(items) && n < maxBatchFrames {
			fb := frameBytes(&items[n])
			if n > 0 {
				if len(buf)+1+len(fb)+2 > maxBatchBytes {
					break
				}
				buf = append(buf, ',')
			}
			buf = append(buf, fb...)
			n++
		}
		buf = append(buf, "]}"...)
		*bp = buf
		if err := conn.Write(ctx, websocket.MessageText, buf); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}
