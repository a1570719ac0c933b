package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// Subprotocol is the WebSocket subprotocol the client speaks.
const Subprotocol = "switchboard.v1"

// Oldest, given as a cursor, subscribes from the oldest event the channel's
// history holds. No cursor the server makes is "oldest".
const Oldest = "oldest"

// Defaults of Options.
const (
	DefaultQueueSize       = 1024
	DefaultMaxPendingCalls = 64
	DefaultMaxMessageBytes = 1 << 20
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 30 * time.Second
	// maxProgress caps Result.Progress.
	maxProgress = 256
)

// Close codes of the protocol beyond RFC 6455's.
const statusSlowConsumer websocket.StatusCode = 4000

// Options configure a Client. The zero value of a field means its default.
type Options struct {
	// Token is a static bearer token.
	Token string
	// TokenFunc, when set, returns the token for each connection; it is
	// called on every (re)connect, so a rotated token is used from the next
	// connection on. It takes precedence over Token.
	TokenFunc func(ctx context.Context) (string, error)
	// Pack asks the server to pack frames into batch messages (?pack=1):
	// fewer messages under load; the client unpacks them.
	Pack bool
	// HTTPClient makes the WebSocket handshake (TLS settings, proxies).
	HTTPClient *http.Client
	// QueueSize bounds each subscription's queue of undelivered events.
	QueueSize int
	// MaxPendingCalls bounds the calls in flight.
	MaxPendingCalls int
	// MaxMessageBytes bounds one server message.
	MaxMessageBytes int64
	// MinBackoff and MaxBackoff bound the wait before a reconnection: the
	// n-th attempt in a row waits a random time in [0, min(MaxBackoff,
	// MinBackoff·2ⁿ)) (full jitter).
	MinBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds one write to the server.
	WriteTimeout time.Duration
	// PingInterval is how often the client sends a protocol ping; one not
	// answered within the interval ends the connection, which is then
	// resumed. It also bounds the WebSocket handshake.
	PingInterval time.Duration
	// Logger gets a line per reconnection; nil discards.
	Logger *slog.Logger
}

// Client is a connection to a Switchboard node that reconnects and
// resumes by itself. Its methods are safe for concurrent use.
type Client struct {
	url  string
	opts Options

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // the run loop has ended
	up     chan struct{} // closed once a connection has been admitted
	upOnce sync.Once

	// mu guards what follows, and serialises writes, so that the frames
	// of a new connection go out before anything sent later. Lock order:
	// mu, then a Subscription's mu.
	mu      sync.Mutex
	conn    *websocket.Conn // nil while disconnected
	subs    map[string]*Subscription
	reqs    map[string]request // frame id -> what waits for its answer
	calls   map[*pendingCall]struct{}
	byCorr  map[string]*pendingCall
	nextID  uint64
	err     error // why the client ended
	lastErr error // of the last connection attempt, for Dial
}

// request is what an answered frame id belongs to: one of them is set.
type request struct {
	sub   *Subscription
	call  *pendingCall
	unsub chan struct{}
}

// Dial connects to the node at rawURL (http, https, ws or wss; a URL
// without a path gets /v1/ws) and returns once the node has admitted the
// connection, or with the error that kept it from doing so before ctx
// ended. The client then keeps the connection up until Close.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	u, err := wsURL(rawURL, opts.Pack)
	if err != nil {
		return nil, err
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.MaxPendingCalls <= 0 {
		opts.MaxPendingCalls = DefaultMaxPendingCalls
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{url: u, opts: opts, done: make(chan struct{}), up: make(chan struct{}),
		subs: map[string]*Subscription{}, reqs: map[string]request{},
		calls: map[*pendingCall]struct{}{}, byCorr: map[string]*pendingCall{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	select {
	case <-c.up:
		return c, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		c.Close()
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		if last != nil {
			return nil, fmt.Errorf("sdk: dial %s: %w (last attempt: %v)", rawURL, ctx.Err(), last)
		}
		return nil, fmt.Errorf("sdk: dial %s: %w", rawURL, ctx.Err())
	}
}

// wsURL is the WebSocket URL of raw.
func wsURL(raw string, pack bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("sdk: url: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("sdk: url %q: the scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("sdk: url %q has no host", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/ws"
	}
	if pack {
		q := u.Query()
		q.Set("pack", "1")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// Err returns why the client ended: nil while it runs, ErrClosed after
// Close, or the error that stopped it (wrapping ErrUnauthorized, a
// *CloseError, ErrMessageTooBig).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client has ended; Err tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close ends the connection with 1000, every subscription (their Events
// channels close) and every call in flight (they return ErrClosed). It
// waits for the client's goroutines and is idempotent.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// run keeps a connection up until the client ends.
func (c *Client) run() {
	var refused string // the token the server last refused
	attempt := 0
	for {
		tok, err := c.token()
		switch {
		case c.ctx.Err() != nil:
			c.end(ErrClosed)
			return
		case err != nil:
			c.setLast(fmt.Errorf("sdk: token: %w", err))
		case refused != "" && tok == refused:
			c.end(fmt.Errorf("%w: the token function gave the refused token again", ErrUnauthorized))
			return
		default:
			admitted, err := c.connect(tok)
			if admitted {
				attempt = 0
				refused = ""
			}
			var ce *CloseError
			switch {
			case c.ctx.Err() != nil:
				c.end(ErrClosed)
				return
			case errors.Is(err, ErrUnauthorized):
				if c.opts.TokenFunc == nil {
					c.end(err)
					return
				}
				refused = tok
			case errors.Is(err, ErrMessageTooBig), errors.As(err, &ce):
				c.end(err)
				return
			}
			c.setLast(err)
			c.opts.Logger.Info("switchboard: connection lost, reconnecting", "err", err)
		}
		if !c.sleep(attempt) {
			c.end(ErrClosed)
			return
		}
		attempt++
	}
}

func (c *Client) token() (string, error) {
	if c.opts.TokenFunc != nil {
		return c.opts.TokenFunc(c.ctx)
	}
	return c.opts.Token, nil
}

func (c *Client) setLast(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// sleep waits the backoff of attempt (full jitter); false if the client
// ended meanwhile.
func (c *Client) sleep(attempt int) bool {
	ceil := c.opts.MaxBackoff
	if attempt < 32 {
		if d := c.opts.MinBackoff << attempt; d > 0 && d < ceil {
			ceil = d
		}
	}
	t := time.NewTimer(rand.N(ceil) + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// connect runs one connection until it ends. admitted says whether the
// server answered a frame (so the token was accepted).
func (c *Client) connect(tok string) (admitted bool, err error) {
	hdr := http.Header{}
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	dctx, cancel := context.WithTimeout(c.ctx, c.opts.PingInterval)
	conn, resp, err := websocket.Dial(dctx, c.url, &websocket.DialOptions{
		HTTPClient: c.opts.HTTPClient, HTTPHeader: hdr, Subprotocols: []string{Subprotocol}})
	cancel()
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return false, fmt.Errorf("%w: %s", ErrUnauthorized, resp.Status)
		}
		return false, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(c.opts.MaxMessageBytes)

	// Protocol pings find a connection the network has silently dropped
	// (no FIN, no RST): a ping not answered in an interval ends it.
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		t := time.NewTicker(c.opts.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(c.ctx, c.opts.PingInterval)
				err := conn.Ping(ctx)
				cancel()
				if err != nil {
					conn.CloseNow()
					return
				}
			}
		}
	}()
	defer func() { conn.CloseNow(); close(stop); <-pinged }()

	c.mu.Lock()
	c.conn = conn
	// A ping first: its pong (or any answer) says the token was accepted.
	c.writeLocked(conn, map[string]string{"type": "ping", "id": c.newIDLocked()})
	for _, s := range c.subs {
		c.subscribeLocked(s)
	}
	for pc := range c.calls {
		c.sendCallLocked(pc)
	}
	c.mu.Unlock()

	defer func() {
		c.mu.Lock()
		c.conn = nil
		for id, r := range c.reqs {
			if r.unsub != nil {
				close(r.unsub)
			}
			delete(c.reqs, id)
		}
		c.mu.Unlock()
	}()
	for {
		_, b, err := conn.Read(c.ctx)
		if err != nil {
			return admitted, closeCause(err)
		}
		if !admitted {
			admitted = true
			c.upOnce.Do(func() { close(c.up) })
		}
		c.handle(b)
	}
}

// closeCause classifies why a connection ended: ErrUnauthorized (1008),
// ErrMessageTooBig, a *CloseError that is not retried, or the error as it
// is (retried).
func closeCause(err error) error {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return fmt.Errorf("%w: %v", ErrMessageTooBig, err)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		return err // abnormal: network, 1006
	}
	switch ce.Code {
	case websocket.StatusPolicyViolation:
		return fmt.Errorf("%w: %s", ErrUnauthorized, ce.Reason)
	case websocket.StatusGoingAway, statusSlowConsumer, websocket.StatusInternalError,
		websocket.StatusServiceRestart, websocket.StatusTryAgainLater, websocket.StatusAbnormalClosure:
		return err
	}
	return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
}

// end stops the client for err: every subscription and call ends.
func (c *Client) end(err error) {
	c.cancel()
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	subs := c.subs
	c.subs = map[string]*Subscription{}
	for pc := range c.calls {
		pc.finish(nil, err)
	}
	c.calls = map[*pendingCall]struct{}{}
	c.byCorr = map[string]*pendingCall{}
	c.mu.Unlock()
	for _, s := range subs {
		s.close(err)
	}
	close(c.done)
}

func (c *Client) newIDLocked() string {
	c.nextID++
	return strconv.FormatUint(c.nextID, 10)
}

// writeLocked sends frame on conn; a failed write ends the connection,
// whose reader then reconnects.
func (c *Client) writeLocked(conn *websocket.Conn, frame any) {
	b, err := json.Marshal(frame)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.WriteTimeout)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		conn.CloseNow()
	}
}

// frame is any server frame, as far as the client reads it.
type frame struct {
	Type          string          `json:"type"`
	ID            string          `json:"id"`
	Channel       string          `json:"channel"`
	Cursor        string          `json:"cursor"`
	CorrelationID string          `json:"correlation_id"`
	Status        string          `json:"status"`
	Event         json.RawMessage `json:"event"`
	// Code is an error frame's code (a string) or a result frame's HTTP
	// status (a number).
	Code    json.RawMessage   `json:"code"`
	Message string            `json:"message"`
	Frames  []json.RawMessage `json:"frames"`
}

// status is a result frame's HTTP status, or 0.
func (f *frame) status() int {
	var n int
	json.Unmarshal(f.Code, &n)
	return n
}

// errorCode is an error frame's code, or "".
func (f *frame) errorCode() string {
	var s string
	json.Unmarshal(f.Code, &s)
	return s
}

// handle dispatches one server message.
func (c *Client) handle(b []byte) {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.opts.Logger.Warn("switchboard: unreadable frame", "err", err)
		return
	}
	switch f.Type {
	case "batch":
		for _, fb := range f.Frames {
			c.handle(fb)
		}
	case "event":
		ev, err := parseCloudEvent(f.Event)
		if err != nil {
			c.opts.Logger.Warn("switchboard: unreadable event", "channel", f.Channel, "err", err)
			return
		}
		c.mu.Lock()
		s := c.subs[f.Channel]
		var pc *pendingCall
		if corr, ok := strings.CutPrefix(f.Channel, "corr:"); ok {
			pc = c.byCorr[corr]
		}
		if pc != nil {
			pc.progress(ev)
		}
		c.mu.Unlock()
		if s != nil {
			s.deliver(c.ctx, Event{Channel: f.Channel, Cursor: f.Cursor, CloudEvent: ev})
		}
	case "gap":
		c.mu.Lock()
		s := c.subs[f.Channel]
		c.mu.Unlock()
		if s != nil {
			s.deliver(c.ctx, Event{Channel: f.Channel, Gap: true})
		}
	case "ack":
		c.mu.Lock()
		r, ok := c.reqs[f.ID]
		delete(c.reqs, f.ID)
		switch {
		case !ok:
		case r.sub != nil:
			r.sub.acked(f.Cursor)
		case r.call != nil:
			r.call.corr = f.CorrelationID
			c.byCorr[f.CorrelationID] = r.call
			c.reqs[f.ID] = r // the result answers the same id
		case r.unsub != nil:
			close(r.unsub)
		}
		c.mu.Unlock()
	case "result":
		c.mu.Lock()
		r, ok := c.reqs[f.ID]
		delete(c.reqs, f.ID)
		if ok && r.call != nil {
			c.forgetCallLocked(r.call)
			var ev *CloudEvent
			if len(f.Event) > 0 && string(f.Event) != "null" {
				if e, err := parseCloudEvent(f.Event); err == nil {
					ev = &e
				}
			}
			r.call.finish(&Result{Status: f.Status, Code: f.status(), CorrelationID: f.CorrelationID, Event: ev, Progress: r.call.events}, nil)
		}
		c.mu.Unlock()
	case "error":
		c.mu.Lock()
		r, ok := c.reqs[f.ID]
		delete(c.reqs, f.ID)
		serr := &ServerError{Code: f.errorCode(), Message: f.Message}
		switch {
		case !ok:
			c.opts.Logger.Warn("switchboard: server error", "code", serr.Code, "message", f.Message)
		case r.sub != nil:
			delete(c.subs, r.sub.channel)
			r.sub.close(serr)
		case r.call != nil:
			if r.call.legacyFallback(serr) && c.conn != nil {
				c.sendCallLocked(r.call)
				break
			}
			c.forgetCallLocked(r.call)
			r.call.finish(nil, serr)
		case r.unsub != nil:
			close(r.unsub)
		}
		c.mu.Unlock()
	}
}

// Subscribe subscribes to channel: live when cursor is "", after cursor
// when it is one the server made, or from the oldest event history holds
// when it is Oldest. It returns once the server has accepted the
// subscription (a refusal is a *ServerError), or ctx ends. A channel has
// at most one subscription per client.
func (c *Client) Subscribe(ctx context.Context, channel, cursor string) (*Subscription, error) {
	if channel == "" {
		return nil, errors.New("sdk: subscribe: no channel")
	}
	s := &Subscription{c: c, channel: channel, cursor: cursor,
		events: make(chan Event, c.opts.QueueSize), ack: make(chan struct{}), stop: make(chan struct{})}
	if cursor == Oldest {
		s.cursor, s.oldest = "", true
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if _, ok := c.subs[channel]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrAlreadySubscribed, channel)
	}
	c.subs[channel] = s
	if c.conn != nil {
		c.subscribeLocked(s)
	}
	c.mu.Unlock()
	select {
	case <-s.ack:
		return s, nil
	case <-s.stop:
		if err := s.Err(); err != nil {
			return nil, err
		}
		return nil, ErrClosed
	case <-ctx.Done():
		s.Unsubscribe(context.Background())
		return nil, ctx.Err()
	}
}

// subscribeLocked sends s's subscribe frame, after its cursor.
func (c *Client) subscribeLocked(s *Subscription) {
	id := c.newIDLocked()
	c.reqs[id] = request{sub: s}
	f := map[string]string{"type": "subscribe", "id": id, "channel": s.channel}
	cur, oldest := s.position()
	switch {
	case cur != "":
		f["cursor"] = cur
	case oldest:
		f["from"] = "oldest"
	}
	c.writeLocked(c.conn, f)
}

// Subscription is one channel's subscription. Its events arrive on Events
// in order, each once, across reconnections.
type Subscription struct {
	c       *Client
	channel string
	events  chan Event
	ack     chan struct{} // closed at the first ack
	stop    chan struct{} // closed when the subscription ends
	once    sync.Once

	mu      sync.Mutex
	cursor  string // of the last event queued, or where the server started
	oldest  bool   // no cursor yet, and asked from the oldest
	acks    int
	sending bool // a delivery waits for room in events
	closing bool // closed while sending: the delivery closes events
	closed  bool // events is closed
	ended   bool // err is set
	err     error
}

// Channel is the subscribed channel.
func (s *Subscription) Channel() string { return s.channel }

// Events delivers the subscription's events and gaps; it is closed when
// the subscription ends (Unsubscribe, Close, or a refusal: see Err).
func (s *Subscription) Events() <-chan Event { return s.events }

// Cursor is the cursor of the last event queued on Events (or where the
// server started the subscription): resubscribing after it, even from
// another process, misses nothing.
func (s *Subscription) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// Err is why the subscription ended: nil while it runs or after
// Unsubscribe.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscription) position() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor, s.oldest
}

// acked records the server's start cursor; c.mu is held.
func (s *Subscription) acked(cursor string) {
	s.mu.Lock()
	if cursor != "" {
		s.cursor, s.oldest = cursor, false
	}
	s.acks++
	first := s.acks == 1
	s.mu.Unlock()
	if first {
		close(s.ack)
	}
}

// deliver queues ev, waiting while the queue is full (which stops the
// connection's reader: see the package doc), and then moves the cursor.
// Only the connection's reader delivers.
func (s *Subscription) deliver(ctx context.Context, ev Event) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.sending = true
	s.mu.Unlock()
	sent := false
	select {
	case s.events <- ev:
		sent = true
	case <-s.stop:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = false
	if sent && !ev.Gap {
		s.cursor, s.oldest = ev.Cursor, false
	}
	if s.closing && !s.closed {
		s.closed = true
		close(s.events)
	}
}

// close ends the subscription with err and closes Events, at once or,
// when a delivery is under way, once it has given up.
func (s *Subscription) close(err error) {
	s.mu.Lock()
	if !s.ended {
		s.ended, s.err = true, err // before stop: a waiting Subscribe reads it
	}
	s.mu.Unlock()
	s.once.Do(func() { close(s.stop) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.closing {
		return
	}
	if s.sending {
		s.closing = true
		return
	}
	s.closed = true
	close(s.events)
}

// Unsubscribe ends the subscription: the server is told (when connected;
// the call waits for its answer until ctx ends) and Events is closed.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if c.subs[s.channel] != s {
		c.mu.Unlock()
		s.close(nil)
		return nil
	}
	delete(c.subs, s.channel)
	var wait chan struct{}
	if c.conn != nil {
		id := c.newIDLocked()
		wait = make(chan struct{})
		c.reqs[id] = request{unsub: wait}
		c.writeLocked(c.conn, map[string]string{"type": "unsubscribe", "id": id, "channel": s.channel})
	}
	c.mu.Unlock()
	s.close(nil)
	if wait == nil {
		return nil
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return nil
	}
}

// SubscribeFunc subscribes like Subscribe and calls fn with each event,
// in order, from one goroutine, until the subscription ends; fn must not
// block for long (while it runs, the subscription's queue fills). It
// returns the subscription; ranging over its Events is not allowed.
func (c *Client) SubscribeFunc(ctx context.Context, channel, cursor string, fn func(Event)) (*Subscription, error) {
	s, err := c.Subscribe(ctx, channel, cursor)
	if err != nil {
		return nil, err
	}
	go func() {
		for ev := range s.events {
			fn(ev)
		}
	}()
	return s, nil
}

// Call runs the declared command (such as "takedowns") with data and
// returns its result, once the server has sent it or ctx ends. The call is
// sent with idempotencyKey, or a random one when it is "": a call in
// flight when the connection drops is sent again with it on the next
// connection, and joins the same command instead of starting another.
// A refused call is a *ServerError.
func (c *Client) Call(ctx context.Context, command string, data map[string]any, idempotencyKey string) (*Result, error) {
	if command == "" {
		return nil, errors.New("sdk: call: no command")
	}
	if idempotencyKey == "" {
		idempotencyKey = uuid.NewString()
	}
	pc := &pendingCall{command: command, data: data, key: idempotencyKey, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if len(c.calls) >= c.opts.MaxPendingCalls {
		c.mu.Unlock()
		return nil, ErrTooManyCalls
	}
	c.calls[pc] = struct{}{}
	if c.conn != nil {
		c.sendCallLocked(pc)
	}
	c.mu.Unlock()
	select {
	case <-pc.done:
		return pc.res, pc.err
	case <-ctx.Done():
		c.mu.Lock()
		c.forgetCallLocked(pc)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// pendingCall is a call in flight; c.mu guards it.
type pendingCall struct {
	command string
	data    map[string]any
	key     string
	legacy  bool // sent as the v1 takedown frame
	corr    string
	events  []CloudEvent
	seen    map[string]bool
	res     *Result
	err     error
	done    chan struct{}
	over    bool
}

func (c *Client) sendCallLocked(pc *pendingCall) {
	id := c.newIDLocked()
	c.reqs[id] = request{call: pc}
	if pc.legacy {
		f := map[string]any{"type": "takedown", "id": id, "idempotency_key": pc.key}
		for k, v := range pc.data {
			if k != "type" && k != "id" {
				f[k] = v
			}
		}
		c.writeLocked(c.conn, f)
		return
	}
	data := pc.data
	if data == nil {
		data = map[string]any{}
	}
	c.writeLocked(c.conn, map[string]any{"type": "call", "id": id, "command": pc.command,
		"data": data, "idempotency_key": pc.key})
}

// legacyFallback reports whether a call refused as an unknown frame type
// goes again as the v1 takedown frame (a node that predates call frames).
func (pc *pendingCall) legacyFallback(err *ServerError) bool {
	if pc.legacy || pc.command != "takedowns" || err.Code != "bad_request" ||
		!strings.Contains(err.Message, `unknown frame type "call"`) {
		return false
	}
	pc.legacy = true
	return true
}

func (c *Client) forgetCallLocked(pc *pendingCall) {
	delete(c.calls, pc)
	if pc.corr != "" && c.byCorr[pc.corr] == pc {
		delete(c.byCorr, pc.corr)
	}
	for id, r := range c.reqs {
		if r.call == pc {
			delete(c.reqs, id)
		}
	}
}

// progress records one corr: event, once.
func (pc *pendingCall) progress(ev CloudEvent) {
	k := ev.Source + "\x00" + ev.ID
	if pc.seen[k] || len(pc.events) >= maxProgress {
		return
	}
	if pc.seen == nil {
		pc.seen = map[string]bool{}
	}
	pc.seen[k] = true
	pc.events = append(pc.events, ev)
}

func (pc *pendingCall) finish(res *Result, err error) {
	if pc.over {
		return
	}
	pc.over, pc.res, pc.err = true, res, err
	close(pc.done)
}
