package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
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
	// Frames handles frame types beyond subscribe, unsubscribe and ping
	// (the sync adapter registers "takedown"). A type with no handler is
	// refused with an error frame.
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
	// Request is the upgrade request.
	Request *http.Request
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

// inFrame is every client frame's common part.
type inFrame struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Cursor  string          `json:"cursor,omitempty"`
}

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
	actx, release, aerr := admit(wh.cfg.Guard, r)
	if aerr == nil {
		defer release()
	}
	c, err := wh.h.NewClient()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		Error(w, http.StatusServiceUnavailable, "shutting down: reconnect to another node")
		return
	}
	defer c.Close()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:   []string{Subprotocol},
		OriginPatterns: wh.cfg.OriginPatterns,
	})
	if err != nil {
		return // Accept has answered (403 for a foreign origin).
	}
	if aerr != nil {
		// A browser cannot read an HTTP status from a failed upgrade, so
		// the refusal is a close code it can see.
		conn.Close(websocket.StatusPolicyViolation, clip(aerr.Error()))
		return
	}
	conn.SetReadLimit(wh.cfg.MaxMessageBytes)
	ctx, cancel := context.WithCancel(actx)
	defer cancel()

	pack := r.URL.Query().Get("pack") == "1"
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		wh.write(ctx, conn, c, pack, &wg)
	}()
	wh.read(ctx, conn, &Session{Ctx: ctx, Client: c, Request: r})
	c.Close()
	wg.Wait()
	conn.CloseNow()
}

// read handles client frames until the connection ends.
func (wh *wsHandler) read(ctx context.Context, conn *websocket.Conn, s *Session) {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return // Too big (1009), closed by peer, or by the writer.
		}
		if typ != websocket.MessageText {
			conn.Close(websocket.StatusUnsupportedData, "binary frames are not supported")
			return
		}
		var f inFrame
		if err := json.Unmarshal(data, &f); err != nil {
			conn.Close(websocket.StatusInvalidFramePayloadData, "invalid JSON")
			return
		}
		wh.handle(ctx, s, &f, data)
	}
}

func (wh *wsHandler) handle(ctx context.Context, s *Session, f *inFrame, raw []byte) {
	switch f.Type {
	case "ping":
		s.Send(ackFrame{Type: "pong", ID: f.ID})
	case "subscribe":
		if err := ValidateChannel(f.Channel); err != nil {
			s.SendError(f.ID, CodeBadRequest, err.Error())
			return
		}
		if err := allow(wh.cfg.Guard, ctx, f.Channel); err != nil {
			s.SendError(f.ID, CodeForbidden, err.Error())
			return
		}
		var after *Position
		if f.Cursor != "" {
			p, err := ParseCursor(f.Cursor)
			if err != nil {
				s.SendError(f.ID, CodeBadRequest, err.Error())
				return
			}
			after = &p
		}
		id := f.ID
		_, err := s.Client.Subscribe(ctx, f.Channel, after, func(res SubscribeResult) []byte {
			b, _ := json.Marshal(ackFrame{Type: "ack", ID: id, Cursor: res.Start.String()})
			return b
		})
		switch {
		case err == nil, errors.Is(err, ErrClosed):
		case errors.Is(err, ErrTooManyChannels):
			s.SendError(f.ID, CodeBadRequest, err.Error())
		default:
			s.SendError(f.ID, CodeUnavailable, "could not subscribe: backplane unavailable")
		}
	case "unsubscribe":
		if err := ValidateChannel(f.Channel); err != nil {
			s.SendError(f.ID, CodeBadRequest, err.Error())
			return
		}
		if !s.Client.Unsubscribe(f.Channel) {
			s.SendError(f.ID, CodeNotFound, "not subscribed to "+f.Channel)
			return
		}
		s.Send(ackFrame{Type: "ack", ID: f.ID})
	case "":
		s.SendError(f.ID, CodeBadRequest, `missing "type"`)
	default:
		if fh := wh.cfg.Frames[f.Type]; fh != nil {
			fh(ctx, s, raw)
			return
		}
		if f.Type == "takedown" {
			s.SendError(f.ID, CodeUnavailable, "takedowns are not enabled on this node")
			return
		}
		s.SendError(f.ID, CodeBadRequest, "unknown frame type "+clipQuote(f.Type))
	}
}

func clipQuote(s string) string {
	b, _ := json.Marshal(clip(s))
	return string(b)
}

// write drains c's queue to conn, pings the peer, and closes with the
// contract's code when the client ends.
func (wh *wsHandler) write(ctx context.Context, conn *websocket.Conn, c *Client, pack bool, wg *sync.WaitGroup) {
	ping := time.NewTicker(wh.cfg.PingInterval)
	defer ping.Stop()
	var batch []byte
	for {
		select {
		case <-c.Ready():
			items := c.Drain()
			var err error
			if pack {
				batch, err = wh.writePacked(ctx, conn, items, batch[:0])
			} else {
				err = wh.writeEach(ctx, conn, items)
			}
			c.Release(items)
			if err != nil {
				conn.CloseNow()
				return
			}
		case <-ping.C:
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, wh.cfg.PingInterval)
				defer cancel()
				if err := conn.Ping(pctx); err != nil {
					conn.CloseNow()
				}
			}()
		case <-c.Done():
			switch c.Err() {
			case ErrSlowConsumer:
				conn.Close(StatusSlowConsumer, "slow consumer: resume with your cursors")
			case ErrShutdown:
				conn.Close(websocket.StatusGoingAway, "going away: reconnect with your cursors")
			}
			return
		case <-ctx.Done():
			return
		}
	}
}

func frameBytes(it *Item) []byte {
	switch it.Kind {
	case ItemEvent:
		return it.Delivery.WSFrame()
	case ItemGap:
		return []byte(`{"type":"gap","channel":"` + it.Channel + `"}`)
	default:
		return it.Raw
	}
}

func (wh *wsHandler) writeOne(ctx context.Context, conn *websocket.Conn, b []byte) error {
	wctx, cancel := context.WithTimeout(ctx, wh.cfg.WriteTimeout)
	defer cancel()
	return conn.Write(wctx, websocket.MessageText, b)
}

func (wh *wsHandler) writeEach(ctx context.Context, conn *websocket.Conn, items []Item) error {
	for i := range items {
		if err := wh.writeOne(ctx, conn, frameBytes(&items[i])); err != nil {
			return err
		}
	}
	return nil
}

// writePacked writes items as batch messages of what is already queued,
// capped in frames and bytes; a lone frame goes as itself.
func (wh *wsHandler) writePacked(ctx context.Context, conn *websocket.Conn, items []Item, buf []byte) ([]byte, error) {
	for len(items) > 0 {
		if len(items) == 1 {
			return buf, wh.writeOne(ctx, conn, frameBytes(&items[0]))
		}
		buf = append(buf[:0], `{"type":"batch","frames":[`...)
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
		if err := wh.writeOne(ctx, conn, buf); err != nil {
			return buf, err
		}
		items = items[n:]
	}
	return buf, nil
}
