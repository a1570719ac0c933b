// Package auth authenticates callers by bearer token or session cookie,
// authorises their subscriptions by role, and enforces per-principal limits.
// It satisfies hub.Guard, so the hub's doors ask it without knowing roles.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/time/rate"

	"github.com/switchboard/switchboard/hub"
)

// Role is what a principal may do.
type Role string

// The roles of the contract.
const (
	// RoleModerator may subscribe to everything and request takedowns.
	RoleModerator Role = "moderator"
	// RolePartner may subscribe to the corr: channels of its own takedowns
	// and to channels granted to it, and request takedowns.
	RolePartner Role = "partner"
	// RolePolice may post takedowns and read its own.
	RolePolice Role = "police"
)

// Principal is an authenticated caller.
type Principal struct {
	Name string
	Role Role
	// Grants are channel patterns (path.Match syntax, e.g. "item:*")
	// allowed beyond the role's own.
	Grants []string

	hash [sha256.Size]byte // the token's SHA-256: keys the session cookie
	jwt  bool              // from a JWT: its session cookie carries it whole
}

// PrincipalConfig is one principal as configured: exactly one of
// TokenSHA256 (hex) and Token (plain, development only) is set.
type PrincipalConfig struct {
	Name        string
	Role        string
	TokenSHA256 string
	Token       string
	Channels    []string
}

// Defaults for Config.
const (
	DefaultMaxConnections = 100
	DefaultTakedownRate   = 5.0
	DefaultTakedownBurst  = 10
	DefaultSessionTTL     = 12 * time.Hour
	// DefaultFailureRate and DefaultFailureBurst let one source address
	// fail 20 authentications at once, then 10 a second: a person who
	// mistypes never meets it, a script that guesses does.
	DefaultFailureRate  = 10.0
	DefaultFailureBurst = 20
	// DefaultFailureSources bounds the source addresses the failure limiter
	// remembers (about 100 bytes each).
	DefaultFailureSources = 10000
)

// Config configures authentication and limits.
type Config struct {
	Principals []PrincipalConfig
	// MaxConnections bounds one principal's open WebSocket and SSE
	// connections on this node.
	MaxConnections int
	// TakedownRate and TakedownBurst bound one principal's takedown
	// requests per second.
	TakedownRate  float64
	TakedownBurst int
	// SessionTTL is how long a session cookie lasts.
	SessionTTL time.Duration
	// SessionSecret keys session cookies together with the principal's
	// token hash. Without it, whoever reads token_sha256 in the
	// configuration can mint cookies; all nodes must share it.
	SessionSecret string
	// FailureRate and FailureBurst bound the failed authentications one
	// source address may make per second; past them its credentials are
	// refused unchecked (429). +Inf turns the limit off.
	FailureRate  float64
	FailureBurst int
	// FailureSources bounds how many source addresses are remembered.
	FailureSources int
	// SourceAddr tells where a request comes from; nil is SourceAddr (the
	// connection's peer). The hook for trusted proxies.
	SourceAddr func(*http.Request) netip.Addr
	// Revocations is the list of signed-out sessions; nil keeps it in this
	// node's memory. Every node must share it (RedisRevocations) for a
	// sign-out to hold on every node.
	Revocations Revocations
	// JWT lets bearer tokens be JWTs too (off unless a key source is set).
	JWT JWTConfig
	// HTTPS tells whether a request came over HTTPS, for Secure cookies;
	// nil is r.TLS != nil. The hook for trusted proxies' X-Forwarded-Proto.
	HTTPS func(*http.Request) bool
}

// Owners tells who asked for a takedown, so a partner may follow the corr:
// channel of its own takedowns and no one else's.
type Owners interface {
	Owner(ctx context.Context, correlationID string) (principal string, ok bool)
}

// Auth is the authenticator, authoriser and limiter of one node.
type Auth struct {
	cfg    Config
	owners Owners
	log    *slog.Logger
	byHash map[[sha256.Size]byte]*Principal
	byName map[string]*Principal

	jwt *jwtVerifier // nil unless cfg.JWT.Enabled()
	// jwtSessionKey keys the session cookies of JWT principals: the
	// session secret, or a random key of this node when there is none.
	jwtSessionKey []byte

	failures *failureLimiter
	stats    failureStats
	logs     *rate.Limiter // bounds the failure log lines

	mu    sync.Mutex
	conns map[string]int
	// holds are the slots Hold took and did not give back yet, by hold
	// (the principal's name); lastHold numbers them.
	holds    map[uint64]string
	lastHold uint64
	rates    map[string]*rate.Limiter
	waits    map[string]*rate.Limiter
}

var _ hub.Guard = (*Auth)(nil)

// New builds an Auth from configured principals. owners may be nil until
// takedowns exist: then partners and police hold no corr: channel.
func New(cfg Config, owners Owners, log *slog.Logger) (*Auth, error) {
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.TakedownRate == 0 {
		cfg.TakedownRate = DefaultTakedownRate
	}
	if cfg.TakedownBurst == 0 {
		cfg.TakedownBurst = DefaultTakedownBurst
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.FailureRate == 0 {
		cfg.FailureRate = DefaultFailureRate
	}
	if cfg.FailureBurst == 0 {
		cfg.FailureBurst = DefaultFailureBurst
	}
	if cfg.FailureSources == 0 {
		cfg.FailureSources = DefaultFailureSources
	}
	if cfg.SourceAddr == nil {
		cfg.SourceAddr = SourceAddr
	}
	if cfg.Revocations == nil {
		cfg.Revocations = NewMemoryRevocations()
	}
	switch {
	case cfg.MaxConnections < 0:
		return nil, fmt.Errorf("auth: MaxConnections must not be negative, got %d", cfg.MaxConnections)
	case cfg.TakedownRate < 0:
		return nil, fmt.Errorf("auth: TakedownRate must not be negative, got %g", cfg.TakedownRate)
	case cfg.TakedownBurst < 0:
		return nil, fmt.Errorf("auth: TakedownBurst must not be negative, got %d", cfg.TakedownBurst)
	case cfg.SessionTTL < 0:
		return nil, fmt.Errorf("auth: SessionTTL must not be negative, got %s", cfg.SessionTTL)
	case !(cfg.FailureRate > 0):
		return nil, fmt.Errorf("auth: FailureRate must be positive, got %g", cfg.FailureRate)
	case cfg.FailureBurst < 0:
		return nil, fmt.Errorf("auth: FailureBurst must not be negative, got %d", cfg.FailureBurst)
	case cfg.FailureSources < 0:
		return nil, fmt.Errorf("auth: FailureSources must not be negative, got %d", cfg.FailureSources)
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Auth{cfg: cfg, owners: owners, log: log,
		byHash: map[[sha256.Size]byte]*Principal{}, byName: map[string]*Principal{},
		failures: newFailureLimiter(cfg.FailureRate, cfg.FailureBurst, cfg.FailureSources),
		logs:     rate.NewLimiter(1, 5),
		conns:    map[string]int{}, holds: map[uint64]string{}, rates: map[string]*rate.Limiter{}, waits: map[string]*rate.Limiter{}}
	var plain []string
	for i, pc := range cfg.Principals {
		p := &Principal{Name: pc.Name, Role: Role(pc.Role), Grants: pc.Channels}
		switch p.Role {
		case RoleModerator, RolePartner, RolePolice:
		default:
			return nil, fmt.Errorf("auth: principals[%d]: unknown role %q", i, pc.Role)
		}
		switch {
		case pc.TokenSHA256 != "" && pc.Token == "":
			b, err := hex.DecodeString(strings.ToLower(pc.TokenSHA256))
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("auth: principals[%d] (%s): token_sha256 must be 64 hex characters", i, pc.Name)
			}
			copy(p.hash[:], b)
		case pc.Token != "" && pc.TokenSHA256 == "":
			p.hash = sha256.Sum256([]byte(pc.Token))
			plain = append(plain, pc.Name)
		default:
			return nil, fmt.Errorf("auth: principals[%d] (%s): set exactly one of token_sha256 and token", i, pc.Name)
		}
		if _, dup := a.byName[p.Name]; dup || p.Name == "" {
			return nil, fmt.Errorf("auth: principals[%d]: name %q is empty or used twice", i, pc.Name)
		}
		if _, dup := a.byHash[p.hash]; dup {
			return nil, fmt.Errorf("auth: principals[%d] (%s): token used by another principal", i, pc.Name)
		}
		a.byHash[p.hash] = p
		a.byName[p.Name] = p
	}
	if cfg.JWT.Enabled() {
		v, err := newJWTVerifier(cfg.JWT, log)
		if err != nil {
			return nil, err
		}
		a.jwt = v
		a.jwtSessionKey = []byte(cfg.SessionSecret)
		if cfg.SessionSecret == "" {
			a.jwtSessionKey = make([]byte, 32)
			_, _ = rand.Read(a.jwtSessionKey)
			log.Warn("auth.session_secret is not set: session cookies of JWT sign-ins are valid on this node only")
		}
	}
	if cfg.SessionSecret == "" && len(plain) < len(cfg.Principals) {
		log.Warn("auth.session_secret is not set: session cookies are keyed by the token hashes alone; set a shared secret on every node")
	}
	if len(plain) > 0 {
		log.Warn("principals with plain tokens: for development only; configure token_sha256", "principals", plain)
	}
	return a, nil
}

// Close stops refreshing the JWKS. The Auth keeps working with the keys
// it has.
func (a *Auth) Close() {
	a.jwt.close()
}

// DevPrincipals makes one random plain token per role, for a start with no
// principals configured. It returns them with the tokens by role.
func DevPrincipals() ([]PrincipalConfig, map[Role]string) {
	tokens := map[Role]string{}
	var ps []PrincipalConfig
	for _, r := range []Role{RoleModerator, RolePartner, RolePolice} {
		var b [24]byte
		_, _ = rand.Read(b[:])
		tok := "dev-" + string(r) + "-" + hex.EncodeToString(b[:])
		tokens[r] = tok
		ps = append(ps, PrincipalConfig{Name: "dev-" + string(r), Role: string(r), Token: tok})
	}
	return ps, tokens
}

// HashToken returns the hex SHA-256 of a token, as token_sha256 wants it.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// byToken finds the principal of a bearer token. The map is keyed by the
// token's SHA-256, which an attacker cannot steer, and the final compare is
// constant-time.
func (a *Auth) byToken(token string) *Principal {
	if token == "" || len(token) > 4096 {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	p := a.byHash[h]
	if p == nil || subtle.ConstantTimeCompare(p.hash[:], h[:]) != 1 {
		return nil
	}
	return p
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Authenticate finds the caller of r: an "Authorization: Bearer" header, an
// access_token query parameter (for EventSource and WebSocket in browsers),
// or a session cookie, in that order; the first one present decides.
// Errors wrap hub.ErrUnauthenticated and never contain the credential; a
// source that failed too often gets a *RateLimitError instead, and a
// session that cannot be checked ErrSessionUncheckable.
func (a *Auth) Authenticate(r *http.Request) (*Principal, error) {
	p, _, err := a.authenticate(r)
	return p, err
}

// authenticate is Authenticate, also returning when the credential expires
// (zero for a token that does not). A failure counts against the request's
// source; a success marks the connection authenticated (hub.Authenticated).
func (a *Auth) authenticate(r *http.Request) (*Principal, time.Time, error) {
	return a.authenticateCtx(r.Context(), r)
}

// authenticateCtx is authenticate of r served with ctx instead of its own
// context (a ContextHandler's).
func (a *Auth) authenticateCtx(ctx context.Context, r *http.Request) (*Principal, time.Time, error) {
	p, exp, _, err := a.authenticateSession(ctx, r)
	return p, exp, err
}

// authenticateSession is authenticateCtx, and also returns the session
// when the credential is a session cookie (else "").
func (a *Auth) authenticateSession(ctx context.Context, r *http.Request) (*Principal, time.Time, string, error) {
	kind := ""
	switch {
	case r.Header.Get("Authorization") != "":
		kind = CredentialBearer
	case r.URL.Query().Has("access_token"):
		kind = CredentialAccessToken
	default:
		if _, err := r.Cookie(SessionCookie); err == nil {
			kind = CredentialCookie
		}
	}
	if kind == "" {
		return nil, time.Time{}, "", fmt.Errorf("%w: send \"Authorization: Bearer <token>\"", hub.ErrUnauthenticated)
	}
	src := a.source(r)
	if err := a.throttle(r, src); err != nil {
		return nil, time.Time{}, "", err
	}
	p, exp, sid, err := a.check(ctx, r, kind)
	if err != nil {
		if !errors.Is(err, ErrSessionUncheckable) {
			a.fail(ctx, r, src, kind, err)
		}
		return nil, time.Time{}, "", err
	}
	hub.Authenticated(ctx)
	return p, exp, sid, nil
}

// check checks r's credential of kind; ctx is the context r is served
// with.
func (a *Auth) check(ctx context.Context, r *http.Request, kind string) (p *Principal, exp time.Time, session string, err error) {
	switch kind {
	case CredentialBearer:
		tok, ok := BearerToken(r.Header.Get("Authorization"))
		if !ok {
			return nil, time.Time{}, "", fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", hub.ErrUnauthenticated)
		}
		p, exp, err = a.token(ctx, tok, "token")
		return p, exp, "", err
	case CredentialAccessToken:
		p, exp, err = a.token(ctx, r.URL.Query().Get("access_token"), "access_token")
		return p, exp, "", err
	default:
		c, _ := r.Cookie(SessionCookie)
		s, ok := a.parseSession(c.Value, time.Now())
		if !ok {
			return nil, time.Time{}, "", fmt.Errorf("%w: the session has expired or is invalid: sign in again", hub.ErrUnauthenticated)
		}
		revoked, err := a.cfg.Revocations.Revoked(ctx, s.id)
		if err != nil {
			hub.LoggerFrom(ctx, a.log).Error("a session cookie could not be checked against the sign-outs; refused", "err", err)
			return nil, time.Time{}, "", fmt.Errorf("%w: the list of signed-out sessions does not answer: retry shortly", ErrSessionUncheckable)
		}
		if revoked {
			return nil, time.Time{}, "", fmt.Errorf("%w: the session was signed out: sign in again", hub.ErrUnauthenticated)
		}
		return s.p, s.expires, s.id, nil
	}
}

// token finds the principal of a bearer token: a configured principal's,
// or a valid JWT's, which expires. what names the credential in errors.
func (a *Auth) token(ctx context.Context, tok, what string) (*Principal, time.Time, error) {
	if p := a.byToken(tok); p != nil {
		return p, time.Time{}, nil
	}
	if a.jwt != nil && len(tok) <= maxJWTBytes && looksLikeJWT(tok) {
		p, exp, err := a.jwt.verify(ctx, tok)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%w: the %s is not a valid JWT: %v", hub.ErrUnauthenticated, what, err)
		}
		return p, exp, nil
	}
	return nil, time.Time{}, fmt.Errorf("%w: unknown %s", hub.ErrUnauthenticated, what)
}

// maxJWTBytes bounds the JWTs that are parsed at all.
const maxJWTBytes = 16 << 10

// BearerToken parses an Authorization header value of the Bearer scheme
// (case-insensitive, RFC 6750). It reports false for anything else.
func BearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" || strings.IndexFunc(tok, badTokenRune) >= 0 {
		return "", false
	}
	return tok, true
}

// badTokenRune reports a rune no bearer token may hold: whitespace (ASCII or
// Unicode) or a control character.
func badTokenRune(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r)
}

// Admit authenticates a WebSocket or SSE connection and takes one of its
// principal's connection slots (hub.Guard; a JWT principal's slots are
// counted by its name). The context records when a JWT or session cookie
// expires (hub.WithExpiry), for the doors to end the connection then, and
// a session cookie's session (hub.WithSession), for a sign-out to end it.
func (a *Auth) Admit(r *http.Request) (context.Context, func(), error) {
	p, exp, sid, err := a.authenticateSession(r.Context(), r)
	if err != nil {
		return nil, nil, err
	}
	release, err := a.Hold(p)
	if err != nil {
		return nil, nil, err
	}
	ctx := WithPrincipal(r.Context(), p)
	if !exp.IsZero() {
		ctx = hub.WithExpiry(ctx, exp)
	}
	if sid != "" {
		ctx = hub.WithSession(ctx, sid)
	}
	return ctx, release, nil
}

// Hold takes one of p's connection slots (limits.connections, shared with
// its WebSocket and SSE connections on this node) for as long as a request
// is held open, such as a takedown waiting for its outcome. release gives
// the slot back, once however often it is called. Over the limit the error
// wraps hub.ErrTooManyConnections (429).
func (a *Auth) Hold(p *Principal) (release func(), err error) {
	a.mu.Lock()
	if a.conns[p.Name] >= a.cfg.MaxConnections {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: %s already holds %d connections", hub.ErrTooManyConnections, p.Name, a.cfg.MaxConnections)
	}
	a.conns[p.Name]++
	a.lastHold++
	id := a.lastHold
	a.holds[id] = p.Name
	a.mu.Unlock()
	// The closure keeps values only (one allocation, no sync.Once of its
	// own): holds says whether the slot is still taken.
	return func() { a.release(id) }, nil
}

// release gives back the slot of hold id, once however often it is called.
func (a *Auth) release(id uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name, ok := a.holds[id]
	if !ok {
		return
	}
	delete(a.holds, id)
	if a.conns[name]--; a.conns[name] <= 0 {
		delete(a.conns, name)
	}
}

// Allow authorises a subscription (hub.Guard): moderators everything;
// partners and police the corr: channels of their own takedowns, plus a
// principal's grants.
func (a *Auth) Allow(ctx context.Context, channel string) error {
	p := FromContext(ctx)
	if p == nil {
		return fmt.Errorf("%w: no principal", hub.ErrForbidden)
	}
	if p.Role == RoleModerator {
		return nil
	}
	for _, g := range p.Grants {
		if ok, _ := path.Match(g, channel); ok {
			return nil
		}
	}
	if id, ok := strings.CutPrefix(channel, "corr:"); ok && a.owners != nil {
		if owner, ok := a.owners.Owner(ctx, id); ok && owner == p.Name {
			return nil
		}
	}
	return fmt.Errorf("%w: %s (%s) may not subscribe to %s", hub.ErrForbidden, p.Name, p.Role, channel)
}

// CanRequestTakedown reports whether p's role may request takedowns.
func CanRequestTakedown(p *Principal) bool {
	return p != nil && (p.Role == RoleModerator || p.Role == RolePartner || p.Role == RolePolice)
}

// RateLimitError refuses a request over a rate.
type RateLimitError struct {
	RetryAfter time.Duration
	// What was too frequent; empty for a principal's takedowns.
	What string
}

// Error says when to retry.
func (e *RateLimitError) Error() string {
	if e.What != "" {
		return fmt.Sprintf("%v: %s: retry after %s", hub.ErrRateLimited, e.What, e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v: retry after %s", hub.ErrRateLimited, e.RetryAfter.Round(time.Millisecond))
}

// Unwrap lets errors.Is find hub.ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return hub.ErrRateLimited }

// AllowTakedown takes one takedown from p's rate budget, or returns a
// *RateLimitError saying when to retry.
func (a *Auth) AllowTakedown(p *Principal) error {
	return a.take(a.rates, p, "")
}

// AllowWait takes one held read (GET /v1/takedowns/{id} with Prefer: wait)
// from p's budget, or returns a *RateLimitError saying when to retry. The
// budget is a bucket of its own, as large as the takedown one
// (limits.takedown_rate, limits.takedown_burst): waiting on takedowns
// never uses up the right to ask for them.
func (a *Auth) AllowWait(p *Principal) error {
	return a.take(a.waits, p, "too many held reads")
}

func (a *Auth) take(buckets map[string]*rate.Limiter, p *Principal, what string) error {
	a.mu.Lock()
	l := buckets[p.Name]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(a.cfg.TakedownRate), a.cfg.TakedownBurst)
		buckets[p.Name] = l
	}
	a.mu.Unlock()
	// Allow takes a token without a Reservation (an allocation); only a
	// refusal reserves, to learn the delay, and cancels.
	if l.Allow() {
		return nil
	}
	r := l.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return &RateLimitError{RetryAfter: d, What: what}
	}
	return nil
}

// Connections returns how many connections p holds on this node.
func (a *Auth) Connections(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns[name]
}

// Require wraps an HTTP API handler: the caller must authenticate and hold
// one of roles (any role when none is given). Refusals are problem+json
// 401/403 (429 for a source that failed too often, 503 when a session
// cannot be checked); the handler finds the principal with FromContext,
// and a session cookie's expiry with hub.ExpiryFrom.
func (a *Auth) Require(next http.Handler, roles ...Role) http.Handler {
	return &required{a: a, next: next, roles: roles}
}

// required is the handler Require returns. It is also a
// tracing.ContextHandler: served with the trace context that way, it
// copies its request once (for the principal) instead of twice.
type required struct {
	a     *Auth
	next  http.Handler
	roles []Role
}

func (h *required) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.ServeHTTPContext(r.Context(), w, r)
}

// ServeHTTPContext serves r as ServeHTTP serves r.WithContext(ctx).
func (h *required) ServeHTTPContext(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	p, exp, err := h.a.authenticateCtx(ctx, r)
	if err != nil {
		writeAuthError(w, err)
		return
	}
	if len(h.roles) > 0 && !hasRole(p, h.roles) {
		hub.WriteRefusal(w, fmt.Errorf("%w: role %s may not do this", hub.ErrForbidden, p.Role))
		return
	}
	ctx = WithPrincipal(ctx, p)
	if !exp.IsZero() {
		ctx = hub.WithExpiry(ctx, exp)
	}
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

func hasRole(p *Principal, roles []Role) bool {
	for _, r := range roles {
		if p.Role == r {
			return true
		}
	}
	return false
}
