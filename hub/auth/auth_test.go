package auth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// Tokens of the test principals: one per role, two partners.
const (
	modTok    = "mod-token-abcdefghijklmnop"
	acmeTok   = "acme-token-abcdefghijklmnop"
	globexTok = "globex-token-abcdefghijklmnop"
	policeTok = "police-token-abcdefghijklmnop"
)

var allTokens = []string{modTok, acmeTok, globexTok, policeTok}

func testPrincipals() []PrincipalConfig {
	return []PrincipalConfig{
		{Name: "mod", Role: "moderator", TokenSHA256: HashToken(modTok)},
		{Name: "acme", Role: "partner", TokenSHA256: strings.ToUpper(HashToken(acmeTok)), Channels: []string{"item:*"}},
		{Name: "globex", Role: "partner", Token: globexTok},
		{Name: "police", Role: "police", TokenSHA256: HashToken(policeTok)},
	}
}

// newTestAuth builds an Auth over the test principals; mutate adjusts cfg.
func newTestAuth(t *testing.T, owners Owners, mutate func(*Config)) *Auth {
	t.Helper()
	cfg := Config{Principals: testPrincipals()}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg, owners, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// lockedBuffer is an io.Writer safe for a logger and a test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestHashToken(t *testing.T) {
	// The example of the contract: sha256("test").
	if got, want := HashToken("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; got != want {
		t.Fatalf("HashToken(test) = %s, want %s", got, want)
	}
	if HashToken("a") == HashToken("b") || len(HashToken("")) != 64 {
		t.Fatal("HashToken is not a hex SHA-256")
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name, header, want string
		ok                 bool
	}{
		{"plain", "Bearer abc", "abc", true},
		{"scheme case-insensitive", "bEaReR abc", "abc", true},
		{"extra spaces before token", "Bearer    abc", "abc", true},
		{"token charset of RFC 6750", "Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g==", true},
		{"empty", "", "", false},
		{"scheme only", "Bearer", "", false},
		{"scheme and space", "Bearer ", "", false},
		{"scheme and spaces", "Bearer    ", "", false},
		{"basic scheme", "Basic dXNlcjpwYXNz", "", false},
		{"no scheme", "abc", "", false},
		{"scheme prefix", "Bearerabc", "", false},
		{"longer scheme", "Bearerx abc", "", false},
		{"tab separator", "Bearer\tabc", "", false},
		{"two tokens", "Bearer abc def", "", false},
		{"trailing space", "Bearer abc ", "", false},
		{"trailing tab", "Bearer abc\t", "", false},
		{"CRLF injection", "Bearer abc\r\nX-Admin: 1", "", false},
		{"newline", "Bearer abc\n", "", false},
		{"NUL", "Bearer abc\x00", "", false},
		{"vertical tab", "Bearer abc\vdef", "", false},
		{"form feed", "Bearer abc\f", "", false},
		{"DEL", "Bearer abc\x7f", "", false},
		{"no-break space", "Bearer abc\u00a0def", "", false},
		{"ideographic space", "Bearer abc\u3000", "", false},
		{"leading tab", "\tBearer abc", "", false},
		{"leading space", " Bearer abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := BearerToken(tt.header)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("BearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestNew(t *testing.T) {
	good := HashToken("x")
	tests := []struct {
		name string
		cfg  Config
		want string // a part of the error; "" for none
	}{
		{"no principals", Config{}, ""},
		{"every role", Config{Principals: testPrincipals()}, ""},
		{"unknown role", Config{Principals: []PrincipalConfig{{Name: "a", Role: "admin", TokenSHA256: good}}}, `unknown role "admin"`},
		{"empty role", Config{Principals: []PrincipalConfig{{Name: "a", TokenSHA256: good}}}, "unknown role"},
		{"short hash", Config{Principals: []PrincipalConfig{{Name: "a", Role: "police", TokenSHA256: good[:62]}}}, "64 hex characters"},
		{"long hash", Config{Principals: []PrincipalConfig{{Name: "a", Role: "police", TokenSHA256: good + "00"}}}, "64 hex characters"},
		{"not hex", Config{Principals: []PrincipalConfig{{Name: "a", Role: "police", TokenSHA256: strings.Repeat("zz", 32)}}}, "64 hex characters"},
		{"both token kinds", Config{Principals: []PrincipalConfig{{Name: "a", Role: "police", TokenSHA256: good, Token: "x"}}}, "exactly one"},
		{"no token", Config{Principals: []PrincipalConfig{{Name: "a", Role: "police"}}}, "exactly one"},
		{"empty name", Config{Principals: []PrincipalConfig{{Role: "police", Token: "x"}}}, "empty or used twice"},
		{"name twice", Config{Principals: []PrincipalConfig{
			{Name: "a", Role: "police", Token: "x"}, {Name: "a", Role: "partner", Token: "y"}}}, "empty or used twice"},
		{"token twice, plain and hashed", Config{Principals: []PrincipalConfig{
			{Name: "a", Role: "police", Token: "x"}, {Name: "b", Role: "partner", TokenSHA256: good}}}, "token used by another principal"},
		{"negative connections", Config{MaxConnections: -1}, "MaxConnections"},
		{"negative rate", Config{TakedownRate: -1}, "TakedownRate"},
		{"negative burst", Config{TakedownBurst: -1}, "TakedownBurst"},
		{"negative session TTL", Config{SessionTTL: -time.Second}, "SessionTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg, nil, slog.New(slog.DiscardHandler))
			if tt.want == "" {
				if err != nil || a == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "auth: ") {
				t.Fatalf("New error %v, want one starting auth: and containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), good) || strings.Contains(err.Error(), `"x"`) {
				t.Fatalf("New error %q repeats a secret", err)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	want := Config{MaxConnections: DefaultMaxConnections, TakedownRate: DefaultTakedownRate,
		TakedownBurst: DefaultTakedownBurst, SessionTTL: DefaultSessionTTL}
	got := a.cfg
	got.Principals = nil
	if got.MaxConnections != want.MaxConnections || got.TakedownRate != want.TakedownRate ||
		got.TakedownBurst != want.TakedownBurst || got.SessionTTL != want.SessionTTL {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

// TestNewWarnsPlainTokens: a plain token is named in a warning, and the
// token itself is not.
func TestNewWarnsPlainTokens(t *testing.T) {
	var buf lockedBuffer
	if _, err := New(Config{Principals: testPrincipals()}, nil, slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "globex") {
		t.Fatalf("no warning naming the plain-token principal: %s", out)
	}
	for _, tok := range allTokens {
		if strings.Contains(out, tok) {
			t.Fatalf("the log holds a token: %s", out)
		}
	}
}

func TestDevPrincipals(t *testing.T) {
	ps, tokens := DevPrincipals()
	ps2, tokens2 := DevPrincipals()
	a, err := New(Config{Principals: append(ps, ps2[0])}, nil, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("two dev principals of one name accepted")
	}
	a, err = New(Config{Principals: ps}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{RoleModerator, RolePartner, RolePolice} {
		if tokens[r] == "" || tokens[r] == tokens2[r] {
			t.Fatalf("%s: dev token %q is empty or repeats", r, tokens[r])
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[r])
		p, err := a.Authenticate(req)
		if err != nil || p.Role != r {
			t.Fatalf("%s: dev token authenticates as %v, %v", r, p, err)
		}
	}
}

// req builds a request with the given credentials; "" leaves one out.
func req(header, accessToken, cookie string) *http.Request {
	u := "/v1/sse?channel=reports"
	if accessToken != "" {
		u += "&access_token=" + url.QueryEscape(accessToken)
	}
	r := httptest.NewRequest(http.MethodGet, u, nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
	}
	return r
}

func TestAuthenticate(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	now := time.Now()
	modCookie := a.newSession(a.byName["mod"], now)
	acmeCookie := a.newSession(a.byName["acme"], now)
	expired := a.newSession(a.byName["mod"], now.Add(-DefaultSessionTTL-time.Minute))
	// Another node with the same principals issues cookies this one accepts.
	other := newTestAuth(t, nil, nil)
	otherCookie := other.newSession(other.byName["police"], now)
	// A node where mod's token changed: its old cookies end.
	rotated := newTestAuth(t, nil, func(c *Config) { c.Principals[0].TokenSHA256 = HashToken("new-mod-token") })

	tests := []struct {
		name                  string
		auth                  *Auth
		header, query, cookie string
		want                  string // principal name; "" for a refusal
	}{
		{"nothing", a, "", "", "", ""},
		{"bearer moderator", a, "Bearer " + modTok, "", "", "mod"},
		{"bearer partner hashed uppercase in config", a, "Bearer " + acmeTok, "", "", "acme"},
		{"bearer partner plain in config", a, "Bearer " + globexTok, "", "", "globex"},
		{"bearer police", a, "bearer " + policeTok, "", "", "police"},
		{"wrong token", a, "Bearer wrong-token", "", "", ""},
		{"token's hash as token", a, "Bearer " + HashToken(modTok), "", "", ""},
		{"token prefix", a, "Bearer " + modTok[:len(modTok)-1], "", "", ""},
		{"token with suffix", a, "Bearer " + modTok + "x", "", "", ""},
		{"token case changed", a, "Bearer " + strings.ToUpper(modTok), "", "", ""},
		{"basic scheme", a, "Basic " + modTok, "", "", ""},
		{"huge token", a, "Bearer " + strings.Repeat("a", 5000), "", "", ""},
		{"query", a, "", acmeTok, "", "acme"},
		{"wrong query", a, "", "wrong", "", ""},
		{"empty query", a, "", "", "", ""},
		{"cookie", a, "", "", modCookie, "mod"},
		{"cookie from another node", a, "", "", otherCookie, "police"},
		{"expired cookie", a, "", "", expired, ""},
		{"cookie after the token changed", rotated, "", "", modCookie, ""},
		{"tampered MAC", a, "", "", flipLast(modCookie), ""},
		{"another principal's name on mod's MAC", a, "", "", swapName(modCookie, acmeCookie), ""},
		{"expiry moved", a, "", "", moveExpiry(modCookie), ""},
		{"cookie of dots", a, "", "", "...", ""},
		{"header wins over query", a, "Bearer " + modTok, acmeTok, "", "mod"},
		{"bad header is not rescued by a good query", a, "Bearer wrong", acmeTok, "", ""},
		{"malformed header is not rescued by a good cookie", a, "Token " + modTok, "", modCookie, ""},
		{"query wins over cookie", a, "", acmeTok, modCookie, "acme"},
		{"bad query is not rescued by a good cookie", a, "", "wrong", modCookie, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req(tt.header, tt.query, tt.cookie)
			if tt.name == "empty query" {
				r = httptest.NewRequest(http.MethodGet, "/v1/sse?access_token=", nil)
			}
			p, err := tt.auth.Authenticate(r)
			if tt.want != "" {
				if err != nil || p == nil || p.Name != tt.want {
					t.Fatalf("got %v, %v; want %s", p, err, tt.want)
				}
				return
			}
			if p != nil || !errors.Is(err, hub.ErrUnauthenticated) {
				t.Fatalf("got %v, %v; want ErrUnauthenticated", p, err)
			}
			if hub.RefusalStatus(err) != http.StatusUnauthorized {
				t.Fatalf("refusal status %d, want 401", hub.RefusalStatus(err))
			}
			for _, secret := range append(allTokens, tt.query, tt.cookie, strings.TrimPrefix(tt.header, "Bearer ")) {
				if len(secret) > 3 && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q repeats a credential", err)
				}
			}
		})
	}
}

func flipLast(c string) string {
	b := []byte(c)
	if b[len(b)-1] == 'A' {
		b[len(b)-1] = 'Q'
	} else {
		b[len(b)-1] = 'A'
	}
	return string(b)
}

func swapName(mine, theirs string) string {
	_, rest, _ := strings.Cut(mine, ".")
	name, _, _ := strings.Cut(theirs, ".")
	return name + "." + rest
}

func moveExpiry(c string) string {
	p := strings.Split(c, ".")
	p[1] += "9"
	return strings.Join(p, ".")
}

// TestSessionCookieShape: the cookie names no token, each has its own id,
// and its MAC changes with the principal's token.
func TestSessionCookieShape(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	now := time.Now()
	c := a.newSession(a.byName["mod"], now)
	if strings.Count(c, ".") != 3 || strings.Contains(c, modTok) || strings.Contains(c, HashToken(modTok)) {
		t.Fatalf("cookie %q", c)
	}
	if again := a.newSession(a.byName["mod"], now); again == c || strings.Split(again, ".")[2] == strings.Split(c, ".")[2] {
		t.Fatalf("two sign-ins in the same second share a session id: %q %q", c, again)
	}
	rotated := newTestAuth(t, nil, func(c *Config) { c.Principals[0].TokenSHA256 = HashToken("new-mod-token") })
	rc := rotated.newSession(rotated.byName["mod"], now)
	if _, ok := a.parseSession(rc, now); ok {
		t.Fatal("a cookie of the new token is valid for the old one")
	}
}

func TestAllow(t *testing.T) {
	owners := NewOwnerTable(time.Hour)
	owners.Record("c-acme", "acme")
	owners.Record("c-globex", "globex")
	owners.Record("c-pol", "police")
	expired := NewOwnerTable(-time.Second) // every entry is already past its TTL
	expired.Record("c-acme", "acme")
	withOwners := newTestAuth(t, owners, nil)
	noOwners := newTestAuth(t, nil, nil)
	lapsed := newTestAuth(t, expired, nil)

	tests := []struct {
		name      string
		auth      *Auth
		principal string // "" for a context with no principal
		channel   string
		ok        bool
	}{
		{"moderator reports", withOwners, "mod", "reports", true},
		{"moderator takedowns", withOwners, "mod", "takedowns", true},
		{"moderator someone's corr", withOwners, "mod", "corr:c-acme", true},
		{"moderator unowned corr", withOwners, "mod", "corr:nobody", true},
		{"partner own corr", withOwners, "acme", "corr:c-acme", true},
		{"partner another partner's corr", withOwners, "acme", "corr:c-globex", false},
		{"partner police's corr", withOwners, "acme", "corr:c-pol", false},
		{"partner unowned corr", withOwners, "acme", "corr:nobody", false},
		{"partner grant item:*", withOwners, "acme", "item:i-9", true},
		{"partner grant does not reach a longer namespace", withOwners, "acme", "items:i-9", false},
		{"partner reports", withOwners, "acme", "reports", false},
		{"partner takedowns", withOwners, "acme", "takedowns", false},
		{"partner with no grant, item", withOwners, "globex", "item:i-9", false},
		{"partner with no grant, own corr", withOwners, "globex", "corr:c-globex", true},
		{"partner with no grant, acme's corr", withOwners, "globex", "corr:c-acme", false},
		{"police reports", withOwners, "police", "reports", false},
		{"police takedowns", withOwners, "police", "takedowns", false},
		{"police item", withOwners, "police", "item:i-9", false},
		{"police own corr", withOwners, "police", "corr:c-pol", true},
		{"police partner's corr", withOwners, "police", "corr:c-acme", false},
		{"corr prefix lookalike", withOwners, "acme", "corrx:c-acme", false},
		{"no owners: partner own corr", noOwners, "acme", "corr:c-acme", false},
		{"no owners: moderator", noOwners, "mod", "corr:c-acme", true},
		{"expired ownership", lapsed, "acme", "corr:c-acme", false},
		{"no principal", withOwners, "", "reports", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.principal != "" {
				ctx = WithPrincipal(ctx, tt.auth.byName[tt.principal])
			}
			err := tt.auth.Allow(ctx, tt.channel)
			if tt.ok {
				if err != nil {
					t.Fatalf("Allow: %v", err)
				}
				return
			}
			if !errors.Is(err, hub.ErrForbidden) || hub.RefusalStatus(err) != http.StatusForbidden {
				t.Fatalf("Allow = %v, want ErrForbidden", err)
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.MaxConnections = 2 })
	admit := func(tok string) (context.Context, func(), error) {
		return a.Admit(req("Bearer "+tok, "", ""))
	}
	ctx1, rel1, err := admit(acmeTok)
	if err != nil {
		t.Fatal(err)
	}
	if p := FromContext(ctx1); p == nil || p.Name != "acme" {
		t.Fatalf("context carries %v", p)
	}
	_, rel2, err := admit(acmeTok)
	if err != nil {
		t.Fatal(err)
	}
	if n := a.Connections("acme"); n != 2 {
		t.Fatalf("acme holds %d, want 2", n)
	}
	// Over the limit: refused, 429, and no slot taken.
	if _, rel, err := admit(acmeTok); !errors.Is(err, hub.ErrTooManyConnections) || rel != nil ||
		hub.RefusalStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("third connection: %v", err)
	}
	if n := a.Connections("acme"); n != 2 {
		t.Fatalf("acme holds %d after a refusal, want 2", n)
	}
	// Another principal has its own slots.
	_, relG, err := admit(globexTok)
	if err != nil {
		t.Fatalf("globex refused because of acme: %v", err)
	}
	relG()
	// An unknown caller takes no slot.
	if _, _, err := admit("wrong"); !errors.Is(err, hub.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
	// Release gives the slot back once, however often it is called.
	rel1()
	rel1()
	rel1()
	if n := a.Connections("acme"); n != 1 {
		t.Fatalf("acme holds %d after one release called three times, want 1", n)
	}
	_, rel3, err := admit(acmeTok)
	if err != nil {
		t.Fatalf("a freed slot is not reusable: %v", err)
	}
	if _, _, err := admit(acmeTok); !errors.Is(err, hub.ErrTooManyConnections) {
		t.Fatalf("over the limit again: %v", err)
	}
	rel2()
	rel3()
	rel3()
	if n := a.Connections("acme"); n != 0 {
		t.Fatalf("acme holds %d after every release, want 0", n)
	}
}

// TestAdmitConcurrent: racing admissions never exceed the limit.
func TestAdmitConcurrent(t *testing.T) {
	const limit, tries = 5, 50
	a := newTestAuth(t, nil, func(c *Config) { c.MaxConnections = limit })
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		releases []func()
	)
	for range tries {
		wg.Go(func() {
			_, rel, err := a.Admit(req("Bearer "+modTok, "", ""))
			if err == nil {
				mu.Lock()
				admitted++
				releases = append(releases, rel)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if admitted != limit || a.Connections("mod") != limit {
		t.Fatalf("admitted %d (holding %d), want %d", admitted, a.Connections("mod"), limit)
	}
	for _, rel := range releases {
		wg.Go(rel)
	}
	wg.Wait()
	if n := a.Connections("mod"); n != 0 {
		t.Fatalf("holding %d after every release", n)
	}
}

func TestAllowTakedown(t *testing.T) {
	const burst = 3
	// A rate this low refills nothing while the test runs.
	a := newTestAuth(t, nil, func(c *Config) { c.TakedownRate = 0.001; c.TakedownBurst = burst })
	police, acme := a.byName["police"], a.byName["acme"]
	for i := range burst {
		if err := a.AllowTakedown(police); err != nil {
			t.Fatalf("takedown %d within the burst: %v", i+1, err)
		}
	}
	for range 2 {
		err := a.AllowTakedown(police)
		var rl *RateLimitError
		if !errors.As(err, &rl) || !errors.Is(err, hub.ErrRateLimited) {
			t.Fatalf("over the burst: %v, want a *RateLimitError", err)
		}
		if rl.RetryAfter <= 0 {
			t.Fatalf("RetryAfter %s, want > 0", rl.RetryAfter)
		}
		if hub.RefusalStatus(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "retry after") {
			t.Fatalf("refusal %d %q", hub.RefusalStatus(err), err)
		}
	}
	// Another principal's budget is untouched.
	if err := a.AllowTakedown(acme); err != nil {
		t.Fatalf("acme limited by police's takedowns: %v", err)
	}
}

func TestCanRequestTakedown(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	for name, p := range a.byName {
		if !CanRequestTakedown(p) {
			t.Errorf("%s may not request takedowns", name)
		}
	}
	if CanRequestTakedown(nil) || CanRequestTakedown(&Principal{Name: "x", Role: "admin"}) {
		t.Error("no principal, or an unknown role, may request takedowns")
	}
}

// get sends a request over a real socket.
func get(t *testing.T, method, url string, hdr http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	r, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		r.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRequire(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	var seen string
	h := a.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = FromContext(r.Context()).Name
	}), RolePolice, RoleModerator)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	anyRole := httptest.NewServer(a.Require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	t.Cleanup(anyRole.Close)

	tests := []struct {
		name, url, token string
		status           int
	}{
		{"no token", srv.URL, "", 401},
		{"wrong token", srv.URL, "nope", 401},
		{"wrong role", srv.URL, acmeTok, 403},
		{"police", srv.URL, policeTok, 200},
		{"moderator", srv.URL, modTok, 200},
		{"any role", anyRole.URL, globexTok, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{}
			if tt.token != "" {
				hdr.Set("Authorization", "Bearer "+tt.token)
			}
			resp, body := get(t, http.MethodGet, tt.url, hdr, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 && resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if seen != "mod" {
		t.Fatalf("handler saw %q, want the last caller mod", seen)
	}
}

func TestSessionHandler(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	srv := httptest.NewServer(a.SessionHandler())
	t.Cleanup(srv.Close)
	tlsSrv := httptest.NewTLSServer(a.SessionHandler())
	t.Cleanup(tlsSrv.Close)

	json := http.Header{"Content-Type": {"application/json"}}
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	tests := []struct {
		name   string
		method string
		hdr    http.Header
		body   string
		status int
	}{
		{"bearer", "POST", http.Header{"Authorization": {"Bearer " + modTok}}, "", 200},
		{"JSON", "POST", json, `{"token":"` + modTok + `"}`, 200},
		{"form", "POST", form, "token=" + url.QueryEscape(modTok), 200},
		{"wrong bearer", "POST", http.Header{"Authorization": {"Bearer nope"}}, "", 401},
		{"malformed header", "POST", http.Header{"Authorization": {"Basic " + modTok}}, "", 401},
		{"wrong JSON token", "POST", json, `{"token":"nope"}`, 401},
		{"empty JSON token", "POST", json, `{}`, 401},
		{"bad JSON", "POST", json, `{"token":`, 400},
		{"oversized JSON", "POST", json, `{"token":"` + strings.Repeat("a", 9<<10) + `"}`, 413},
		{"oversized form", "POST", form, "token=" + strings.Repeat("a", 9<<10), 413},
		{"wrong content type", "POST", http.Header{"Content-Type": {"text/plain"}}, modTok, 415},
		{"who, no credentials", "GET", nil, "", 401},
		{"who, token", "GET", http.Header{"Authorization": {"Bearer " + acmeTok}}, "", 200},
		{"method", "PUT", nil, "", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, tt.method, srv.URL, tt.hdr, strings.NewReader(tt.body))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			cookies := resp.Cookies()
			if tt.status != 200 || tt.method != "POST" {
				if len(cookies) != 0 {
					t.Fatalf("cookie set on a refusal: %v", cookies)
				}
				if tt.status != 200 && resp.Header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("refusal content type %q", resp.Header.Get("Content-Type"))
				}
				return
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			c := cookies[0]
			if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" ||
				c.MaxAge != int(DefaultSessionTTL.Seconds()) {
				t.Fatalf("cookie %+v", c)
			}
			if strings.Contains(c.Value, modTok) || !strings.Contains(body, `"name":"mod"`) {
				t.Fatalf("cookie %q, body %s", c.Value, body)
			}
			// The cookie alone signs its holder in.
			resp, body = get(t, "GET", srv.URL, http.Header{"Cookie": {c.Name + "=" + c.Value}}, nil)
			if resp.StatusCode != 200 || !strings.Contains(body, `"role":"moderator"`) {
				t.Fatalf("GET with the cookie: %d %s", resp.StatusCode, body)
			}
		})
	}

	t.Run("secure over TLS", func(t *testing.T) {
		r, _ := http.NewRequestWithContext(t.Context(), "POST", tlsSrv.URL, nil)
		r.Header.Set("Authorization", "Bearer "+modTok)
		resp, err := tlsSrv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly {
			t.Fatalf("cookies over TLS %v", cs)
		}
	})
	t.Run("sign out", func(t *testing.T) {
		resp, _ := get(t, "DELETE", srv.URL, nil, nil)
		cs := resp.Cookies()
		if resp.StatusCode != 204 || len(cs) != 1 || cs[0].MaxAge >= 0 || cs[0].Value != "" {
			t.Fatalf("sign out: %d %v", resp.StatusCode, cs)
		}
	})
}

// TestSignInLogsNoToken: signing in is logged with the principal, never the
// token or the cookie.
func TestSignInLogsNoToken(t *testing.T) {
	var buf lockedBuffer
	a, err := New(Config{Principals: testPrincipals()}, nil, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.SessionHandler())
	t.Cleanup(srv.Close)
	resp, _ := get(t, "POST", srv.URL, http.Header{"Authorization": {"Bearer " + policeTok}}, nil)
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	out := buf.String()
	if !strings.Contains(out, "signed in") || !strings.Contains(out, "principal=police") {
		t.Fatalf("sign-in not logged: %s", out)
	}
	for _, secret := range append(allTokens, resp.Cookies()[0].Value) {
		if strings.Contains(out, secret) {
			t.Fatalf("the log holds a credential: %s", out)
		}
	}
}

func TestCORS(t *testing.T) {
	var calls int
	var mu sync.Mutex
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	})
	srv := httptest.NewServer(CORS([]string{"https://Partner.example/", "http://localhost:3000"}, next))
	t.Cleanup(srv.Close)
	anySrv := httptest.NewServer(CORS([]string{"*"}, next))
	t.Cleanup(anySrv.Close)
	bothSrv := httptest.NewServer(CORS([]string{"https://partner.example", "*"}, next))
	t.Cleanup(bothSrv.Close)

	tests := []struct {
		name, url, method, origin string
		preflight                 bool
		status                    int
		acao                      string // Access-Control-Allow-Origin wanted
		reached                   bool
	}{
		{"no Origin", srv.URL, "GET", "", false, 418, "", true},
		{"same origin", srv.URL, "GET", srv.URL, false, 418, "", true},
		{"allowed origin", srv.URL, "GET", "https://partner.example", false, 418, "https://partner.example", true},
		{"allowed origin, case folded", srv.URL, "POST", "https://PARTNER.example", false, 418, "https://PARTNER.example", true},
		{"allowed origin with a port", srv.URL, "GET", "http://localhost:3000", false, 418, "http://localhost:3000", true},
		{"preflight", srv.URL, "OPTIONS", "https://partner.example", true, 204, "https://partner.example", false},
		{"other origin", srv.URL, "GET", "https://evil.example", false, 403, "", false},
		{"other origin preflight", srv.URL, "OPTIONS", "https://evil.example", true, 403, "", false},
		{"allowed host, other scheme", srv.URL, "GET", "http://partner.example", false, 403, "", false},
		{"allowed host, other port", srv.URL, "GET", "http://localhost:3001", false, 403, "", false},
		{"suffix lookalike", srv.URL, "GET", "https://partner.example.evil", false, 403, "", false},
		{"null origin", srv.URL, "GET", "null", false, 403, "", false},
		{"garbage origin", srv.URL, "GET", "::::", false, 403, "", false},
		{"any origin", anySrv.URL, "GET", "https://evil.example", false, 418, "*", true},
		{"any origin, preflight", anySrv.URL, "OPTIONS", "https://evil.example", true, 204, "*", false},
		{"null origin where any is allowed", anySrv.URL, "GET", "null", false, 403, "", false},
		{"null origin, preflight", anySrv.URL, "OPTIONS", "null", true, 403, "", false},
		{"listed origin where any is also allowed", bothSrv.URL, "GET", "https://partner.example", false, 418, "https://partner.example", true},
		{"unlisted origin where any is also allowed", bothSrv.URL, "GET", "https://evil.example", false, 418, "*", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			before := calls
			mu.Unlock()
			hdr := http.Header{}
			if tt.origin != "" {
				hdr.Set("Origin", tt.origin)
			}
			if tt.preflight {
				hdr.Set("Access-Control-Request-Method", "POST")
			}
			resp, body := get(t, tt.method, tt.url, hdr, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.acao {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.acao)
			}
			// Credentials only for an origin listed exactly, never with *.
			if tt.acao != "" {
				creds := resp.Header.Get("Access-Control-Allow-Credentials")
				if (tt.acao == "*") != (creds == "") || !strings.Contains(resp.Header.Get("Vary"), "Origin") {
					t.Fatalf("CORS headers %v", resp.Header)
				}
			}
			if tt.preflight && tt.status == 204 &&
				(!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
					!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "traceparent") || resp.Header.Get("Access-Control-Allow-Methods") == "") {
				t.Fatalf("preflight headers %v", resp.Header)
			}
			if tt.status == 403 && resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("refusal content type %q", resp.Header.Get("Content-Type"))
			}
			mu.Lock()
			reached := calls > before
			mu.Unlock()
			if reached != tt.reached {
				t.Fatalf("handler reached %v, want %v", reached, tt.reached)
			}
		})
	}
}

func TestOwnerTable(t *testing.T) {
	o := NewOwnerTable(time.Hour)
	if _, ok := o.Owner(t.Context(), "c-1"); ok {
		t.Fatal("an empty table knows an owner")
	}
	o.Record("c-1", "acme")
	o.Record("c-2", "globex")
	if n, ok := o.Owner(t.Context(), "c-1"); !ok || n != "acme" {
		t.Fatalf("c-1 owner %q %v", n, ok)
	}
	if n, ok := o.Owner(t.Context(), "c-2"); !ok || n != "globex" {
		t.Fatalf("c-2 owner %q %v", n, ok)
	}
	// Many entries: the sweep keeps live ones.
	for i := range 3000 {
		o.Record("bulk-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+"-"+time.Duration(i).String(), "mod")
	}
	if n, ok := o.Owner(t.Context(), "c-1"); !ok || n != "acme" {
		t.Fatalf("c-1 lost after a sweep: %q %v", n, ok)
	}
}

// TestSessionSecret: a cookie minted under one auth.session_secret is refused
// where another is configured, and accepted where the same one is.
func TestSessionSecret(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.SessionSecret = "s1" })
	same := newTestAuth(t, nil, func(c *Config) { c.SessionSecret = "s1" })
	other := newTestAuth(t, nil, func(c *Config) { c.SessionSecret = "s2" })
	cookie := a.newSession(a.byName["mod"], time.Now())
	if _, ok := same.parseSession(cookie, time.Now()); !ok {
		t.Fatal("a node with the same secret refused the cookie")
	}
	if _, ok := other.parseSession(cookie, time.Now()); ok {
		t.Fatal("a node with another secret accepted the cookie")
	}
}
