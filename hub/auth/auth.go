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
	"fmt"
	"log/slog"
	"net/http"
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

	mu    sync.Mutex
	conns map[string]int
	rates map[string]*rate.Limiter
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
	switch {
	case cfg.MaxConnections < 0:
		return nil, fmt.Errorf("auth: MaxConnections must not be negative, got %d", cfg.MaxConnections)
	case cfg.TakedownRate < 0:
		return nil, fmt.Errorf("auth: TakedownRate must not be negative, got %g", cfg.TakedownRate)
	case cfg.TakedownBurst < 0:
		return nil, fmt.Errorf("auth: TakedownBurst must not be negative, got %d", cfg.TakedownBurst)
	case cfg.SessionTTL < 0:
		return nil, fmt.Errorf("auth: SessionTTL must not be negative, got %s", cfg.SessionTTL)
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Auth{cfg: cfg, owners: owners, log: log,
		byHash: map[[sha256.Size]byte]*Principal{}, byName: map[string]*Principal{},
		conns: map[string]int{}, rates: map[string]*rate.Limiter{}}
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
	if cfg.SessionSecret == "" && len(plain) < len(cfg.Principals) {
		log.Warn("auth.session_secret is not set: session cookies are keyed by the token hashes alone; set a shared secret on every node")
	}
	if len(plain) > 0 {
		log.Warn("principals with plain tokens: for development only; configure token_sha256", "principals", plain)
	}
	return a, nil
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
// or a session cookie, in that order. Errors wrap hub.ErrUnauthenticated and
// never contain the token.
func (a *Auth) Authenticate(r *http.Request) (*Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := BearerToken(h)
		if !ok {
			return nil, fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", hub.ErrUnauthenticated)
		}
		if p := a.byToken(tok); p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("%w: unknown token", hub.ErrUnauthenticated)
	}
	if q := r.URL.Query(); q.Has("access_token") {
		if p := a.byToken(q.Get("access_token")); p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("%w: unknown access_token", hub.ErrUnauthenticated)
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		if p := a.session(c.Value); p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("%w: the session has expired or is invalid: sign in again", hub.ErrUnauthenticated)
	}
	return nil, fmt.Errorf("%w: send \"Authorization: Bearer <token>\"", hub.ErrUnauthenticated)
}

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
// principal's connection slots (hub.Guard).
func (a *Auth) Admit(r *http.Request) (context.Context, func(), error) {
	p, err := a.Authenticate(r)
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	if a.conns[p.Name] >= a.cfg.MaxConnections {
		a.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %s already holds %d connections", hub.ErrTooManyConnections, p.Name, a.cfg.MaxConnections)
	}
	a.conns[p.Name]++
	a.mu.Unlock()
	var once sync.Once
	return WithPrincipal(r.Context(), p), func() {
		once.Do(func() {
			a.mu.Lock()
			if a.conns[p.Name]--; a.conns[p.Name] <= 0 {
				delete(a.conns, p.Name)
			}
			a.mu.Unlock()
		})
	}, nil
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

// RateLimitError refuses a request over a principal's rate.
type RateLimitError struct {
	RetryAfter time.Duration
}

// Error says when to retry.
func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: retry after %s", hub.ErrRateLimited, e.RetryAfter.Round(time.Millisecond))
}

// Unwrap lets errors.Is find hub.ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return hub.ErrRateLimited }

// AllowTakedown takes one takedown from p's rate budget, or returns a
// *RateLimitError saying when to retry.
func (a *Auth) AllowTakedown(p *Principal) error {
	a.mu.Lock()
	l := a.rates[p.Name]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(a.cfg.TakedownRate), a.cfg.TakedownBurst)
		a.rates[p.Name] = l
	}
	a.mu.Unlock()
	r := l.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return &RateLimitError{RetryAfter: d}
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
// 401/403; the handler finds the principal with FromContext.
func (a *Auth) Require(next http.Handler, roles ...Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r)
		if err != nil {
			hub.WriteRefusal(w, err)
			return
		}
		if len(roles) > 0 && !hasRole(p, roles) {
			hub.WriteRefusal(w, fmt.Errorf("%w: role %s may not do this", hub.ErrForbidden, p.Role))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

func hasRole(p *Principal, roles []Role) bool {
	for _, r := range roles {
		if p.Role == r {
			return true
		}
	}
	return false
}
