package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/hub"
)

// jwksServer is an identity provider's JWKS endpoint whose keys a test
// may add to while it serves.
type jwksServer struct {
	*httptest.Server
	store   jwkset.Storage
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{store: jwkset.NewMemoryStorage()}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		b, err := s.store.JSONPublic(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

// add publishes key's public half under kid.
func (s *jwksServer) add(t *testing.T, kid string, key crypto.Signer, alg jwkset.ALG) {
	t.Helper()
	k, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.KeyWrite(t.Context(), k); err != nil {
		t.Fatal(err)
	}
}

var (
	rsaKeysOnce sync.Once
	rsaKeys     [3]*rsa.PrivateKey
)

// testRSAKeys are three RSA keys, made once per test binary.
func testRSAKeys(t *testing.T) [3]*rsa.PrivateKey {
	t.Helper()
	rsaKeysOnce.Do(func() {
		for i := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[i] = k
		}
	})
	return rsaKeys
}

const (
	testIssuer   = "https://idp.example"
	testAudience = "switchboard"
)

// claims are valid claims for a moderator named alice, expiring in a minute.
func claims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": "alice", "role": "moderator", "iss": testIssuer, "aud": testAudience,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
}

func sign(t *testing.T, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v1/sse", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// newJWTAuth builds an Auth that verifies JWTs with the JWKS of s, besides
// the test principals.
func newJWTAuth(t *testing.T, s *jwksServer, mutate func(*JWTConfig)) *Auth {
	t.Helper()
	jc := JWTConfig{JWKSURL: s.URL, Issuer: testIssuer, Audience: testAudience, Algorithms: []string{"RS256", "ES256"}}
	if mutate != nil {
		mutate(&jc)
	}
	a := newTestAuth(t, nil, func(c *Config) { c.JWT = jc; c.SessionSecret = "s3cret"; c.FailureRate = math.Inf(1) })
	t.Cleanup(a.Close)
	return a
}

// TestJWTFromJWKS: tokens signed by either key of the JWKS are accepted
// with the principal their claims name; a key added to the JWKS after
// start is fetched on first use; every flawed token is refused with 401.
func TestJWTFromJWKS(t *testing.T) {
	keys := testRSAKeys(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := newJWKSServer(t)
	s.add(t, "k1", keys[0], jwkset.AlgRS256)
	s.add(t, "k2", ec, jwkset.AlgES256)
	a := newJWTAuth(t, s, nil)

	t.Run("either key", func(t *testing.T) {
		for _, tok := range []string{
			sign(t, jwt.SigningMethodRS256, "k1", keys[0], claims()),
			sign(t, jwt.SigningMethodES256, "k2", ec, claims()),
		} {
			p, err := a.Authenticate(bearer(tok))
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != "alice" || p.Role != RoleModerator {
				t.Errorf("principal = %+v, want alice, moderator", p)
			}
		}
	})

	t.Run("claims", func(t *testing.T) {
		c := claims()
		c["role"] = "partner"
		c["channels"] = []any{"item:*", "takedowns"}
		p, err := a.Authenticate(bearer(sign(t, jwt.SigningMethodRS256, "k1", keys[0], c)))
		if err != nil {
			t.Fatal(err)
		}
		if p.Role != RolePartner || strings.Join(p.Grants, ",") != "item:*,takedowns" {
			t.Errorf("principal = %+v, want a partner with item:* and takedowns", p)
		}
		ctx := WithPrincipal(context.Background(), p)
		if err := a.Allow(ctx, "item:42"); err != nil {
			t.Errorf("granted channel refused: %v", err)
		}
		if err := a.Allow(ctx, "corr:x"); !errors.Is(err, hub.ErrForbidden) {
			t.Errorf("ungranted channel: %v, want forbidden", err)
		}
	})

	t.Run("rotated key", func(t *testing.T) {
		before := s.fetches.Load()
		s.add(t, "k3", keys[2], jwkset.AlgRS256)
		if _, err := a.Authenticate(bearer(sign(t, jwt.SigningMethodRS256, "k3", keys[2], claims()))); err != nil {
			t.Fatalf("a key added to the JWKS after start: %v", err)
		}
		if got := s.fetches.Load() - before; got != 1 {
			t.Errorf("the JWKS was fetched %d times for the new kid, want 1", got)
		}
		// The refresh is rate limited: another unknown kid does not
		// fetch again.
		if _, err := a.Authenticate(bearer(sign(t, jwt.SigningMethodRS256, "k9", keys[1], claims()))); !errors.Is(err, hub.ErrUnauthenticated) {
			t.Errorf("unknown kid: %v", err)
		}
		if got := s.fetches.Load() - before; got != 1 {
			t.Errorf("the JWKS was fetched %d times, want 1: unknown kids are rate limited", got)
		}
	})

	pubDER, err := x509.MarshalPKIXPublicKey(&keys[0].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	with := func(k string, v any) jwt.MapClaims {
		c := claims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name, tok string
	}{
		{"expired", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("exp", time.Now().Add(-time.Minute).Unix()))},
		{"not valid yet (nbf)", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("nbf", time.Now().Add(time.Minute).Unix()))},
		{"no exp", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("exp", nil))},
		{"wrong aud", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("aud", "other"))},
		{"wrong iss", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("iss", "https://evil.example"))},
		{"alg none", none},
		{"HS256 with the public key", sign(t, jwt.SigningMethodHS256, "k1", pubPEM, claims())},
		{"HS256 with the public key, no kid", sign(t, jwt.SigningMethodHS256, "", pubPEM, claims())},
		{"alg not listed", sign(t, jwt.SigningMethodRS512, "k1", keys[0], claims())},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, "nope", keys[1], claims())},
		{"signed by another key", sign(t, jwt.SigningMethodRS256, "k1", keys[1], claims())},
		{"no role", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("role", nil))},
		{"unknown role", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("role", "admin"))},
		{"no sub", sign(t, jwt.SigningMethodRS256, "k1", keys[0], with("sub", nil))},
		{"tampered", sign(t, jwt.SigningMethodRS256, "k1", keys[0], claims()) + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []*http.Request{bearer(tc.tok), req("", tc.tok, "")} {
				_, err := a.Authenticate(r)
				if !errors.Is(err, hub.ErrUnauthenticated) {
					t.Fatalf("err = %v, want unauthenticated", err)
				}
				if hub.RefusalStatus(err) != http.StatusUnauthorized {
					t.Errorf("status %d, want 401", hub.RefusalStatus(err))
				}
				if strings.Contains(err.Error(), tc.tok) {
					t.Errorf("the error holds the token: %v", err)
				}
			}
		})
	}
}

// TestJWTClaimsMapping: the claims mapping of docs/deployment.md's
// identity-provider example (name_claim preferred_username, role_claim
// realm_access.roles, a list with other roles, channels_claim
// switchboard_channels) makes a partner named acme with its grant; the
// leeway admits a token expired or not yet valid by less than it, and no
// more.
func TestJWTClaimsMapping(t *testing.T) {
	keys := testRSAKeys(t)
	s := newJWKSServer(t)
	s.add(t, "k1", keys[0], jwkset.AlgRS256)
	a := newJWTAuth(t, s, func(c *JWTConfig) {
		c.NameClaim, c.RoleClaim, c.ChannelsClaim = "preferred_username", "realm_access.roles", "switchboard_channels"
		c.Leeway = 30 * time.Second
	})
	idp := func(mutate func(jwt.MapClaims)) string {
		now := time.Now()
		c := jwt.MapClaims{"iss": testIssuer, "aud": []any{testAudience, "account"}, "sub": "f81d4fae-7dec",
			"exp": now.Add(time.Minute).Unix(), "preferred_username": "acme",
			"realm_access": map[string]any{"roles": []any{"offline_access", "partner"}}, "switchboard_channels": []any{"item:*"}}
		if mutate != nil {
			mutate(c)
		}
		return sign(t, jwt.SigningMethodRS256, "k1", keys[0], c)
	}
	p, err := a.Authenticate(bearer(idp(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "acme" || p.Role != RolePartner || strings.Join(p.Grants, ",") != "item:*" {
		t.Errorf("principal = %+v, want the partner acme granted item:*", p)
	}
	for _, tc := range []struct {
		name   string
		mutate func(jwt.MapClaims)
		ok     bool
	}{
		{"expired within the leeway", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }, true},
		{"valid from within the leeway", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Second).Unix() }, true},
		{"expired beyond the leeway", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }, false},
		{"valid from beyond the leeway", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }, false},
		{"two of the roles", func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []any{"partner", "police"}} }, false},
		{"the role at the top level only", func(c jwt.MapClaims) { delete(c, "realm_access"); c["role"] = "partner" }, false},
		{"no name claim", func(c jwt.MapClaims) { delete(c, "preferred_username") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(bearer(idp(tc.mutate)))
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, hub.ErrUnauthenticated) {
				t.Fatalf("err = %v, want unauthenticated", err)
			}
		})
	}
}

// TestJWTKeySources: PEM public keys and an HMAC secret verify tokens; an
// HS256 token signed with the PEM file's bytes is refused.
func TestJWTKeySources(t *testing.T) {
	keys := testRSAKeys(t)
	der, err := x509.MarshalPKIXPublicKey(&keys[0].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	file := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(file, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("k", 32)
	a := newTestAuth(t, nil, func(c *Config) {
		c.JWT = JWTConfig{PublicKeyFiles: []string{file}, HMACSecret: secret, Issuer: testIssuer, Audience: testAudience}
	})
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"PEM key", sign(t, jwt.SigningMethodRS256, "", keys[0], claims()), true},
		{"PEM key, PS256", sign(t, jwt.SigningMethodPS256, "any", keys[0], claims()), true},
		{"HMAC secret", sign(t, jwt.SigningMethodHS256, "", []byte(secret), claims()), true},
		{"HS256 with the PEM bytes", sign(t, jwt.SigningMethodHS256, "", pubPEM, claims()), false},
		{"HS256 with the DER bytes", sign(t, jwt.SigningMethodHS256, "", der, claims()), false},
		{"other RSA key", sign(t, jwt.SigningMethodRS256, "", keys[1], claims()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(bearer(tc.tok))
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, hub.ErrUnauthenticated) {
				t.Fatalf("err = %v, want unauthenticated", err)
			}
		})
	}
}

// TestJWTConfigRefused: configurations that would accept what they should
// not are refused at New.
func TestJWTConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  JWTConfig
		want string
	}{
		{"none", JWTConfig{HMACSecret: strings.Repeat("k", 32), Algorithms: []string{"none"}}, `"none" is not one of`},
		{"HS without a secret", JWTConfig{JWKSURL: "http://127.0.0.1:1/jwks", Algorithms: []string{"HS256"}}, "HS256 needs an HMAC secret"},
		{"RS without keys", JWTConfig{HMACSecret: strings.Repeat("k", 32), Algorithms: []string{"RS256"}}, "RS256 needs a JWKS URL"},
		{"short secret", JWTConfig{HMACSecret: "short"}, "at least 32 bytes"},
		{"missing file", JWTConfig{PublicKeyFiles: []string{"/nonexistent.pem"}}, "public_key_files[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{JWT: tc.cfg}, nil, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestJWTAdmitExpiry: Admit records the JWT's exp for the doors, and
// counts the connection against the principal's name.
func TestJWTAdmitExpiry(t *testing.T) {
	keys := testRSAKeys(t)
	s := newJWKSServer(t)
	s.add(t, "k1", keys[0], jwkset.AlgRS256)
	a := newJWTAuth(t, s, func(c *JWTConfig) { c.Leeway = 5 * time.Second })
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	c := claims()
	c["exp"] = exp.Unix()
	ctx, release, err := a.Admit(bearer(sign(t, jwt.SigningMethodRS256, "k1", keys[0], c)))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	at, ok := hub.ExpiryFrom(ctx)
	if !ok || !at.Equal(exp.Add(5*time.Second)) {
		t.Errorf("expiry = %v %v, want exp plus the leeway %v", at, ok, exp.Add(5*time.Second))
	}
	if got := a.Connections("alice"); got != 1 {
		t.Errorf("alice holds %d connections, want 1", got)
	}
}

// TestJWTSignIn: POST /v1/session with a JWT sets a cookie that ends with
// the JWT and authenticates as its principal; a cookie of a principal
// made up without the session secret is refused.
func TestJWTSignIn(t *testing.T) {
	keys := testRSAKeys(t)
	s := newJWKSServer(t)
	s.add(t, "k1", keys[0], jwkset.AlgRS256)
	a := newJWTAuth(t, s, nil)
	srv := httptest.NewServer(a.SessionHandler())
	t.Cleanup(srv.Close)

	c := claims()
	c["exp"] = time.Now().Add(90 * time.Second).Unix()
	c["role"] = "partner"
	c["channels"] = "item:* takedowns"
	r, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	r.Header.Set("Authorization", "Bearer "+sign(t, jwt.SigningMethodRS256, "k1", keys[0], c))
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %s", resp.Status)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			cookie = ck
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	if cookie.MaxAge <= 0 || cookie.MaxAge > 90 {
		t.Errorf("cookie Max-Age %d outlives the JWT (90 s)", cookie.MaxAge)
	}
	ctx, release, err := a.Admit(req("", "", cookie.Value))
	if err != nil {
		t.Fatalf("the cookie of a JWT sign-in: %v", err)
	}
	defer release()
	p := FromContext(ctx)
	if p.Name != "alice" || p.Role != RolePartner || strings.Join(p.Grants, ",") != "item:*,takedowns" {
		t.Errorf("principal = %+v", p)
	}
	if at, ok := hub.ExpiryFrom(ctx); !ok || at.After(time.Now().Add(91*time.Second)) {
		t.Errorf("cookie expiry %v outlives the JWT", at)
	}
	// The same cookie with the role raised does not pass its MAC.
	parts := strings.Split(cookie.Value, ".")
	forged := strings.Replace(cookie.Value, parts[1], swapRole(t, parts[1]), 1)
	if _, err := a.Authenticate(req("", "", forged)); !errors.Is(err, hub.ErrUnauthenticated) {
		t.Errorf("forged cookie: %v", err)
	}
	// A node with another session secret refuses it.
	other := newJWTAuth(t, s, nil)
	other.jwtSessionKey = []byte("another secret")
	if _, err := other.Authenticate(req("", "", cookie.Value)); !errors.Is(err, hub.ErrUnauthenticated) {
		t.Errorf("another secret: %v", err)
	}
}

func swapRole(t *testing.T, part string) string {
	t.Helper()
	p := (&Auth{jwt: &jwtVerifier{}}).jwtSessionPrincipal(part)
	if p == nil {
		t.Fatalf("the cookie's principal part %q does not decode", part)
	}
	p.Role = RoleModerator
	v := (&Auth{}).mintSession(p, time.Now().Add(time.Minute), [16]byte{})
	return strings.Split(v, ".")[1]
}

// TestJWTWebSocketExpires: a WebSocket opened with a JWT that expires in
// 2 s is closed with 1008 "expired" (the door reads the expiry Admit
// records).
func TestJWTWebSocketExpires(t *testing.T) {
	keys := testRSAKeys(t)
	s := newJWKSServer(t)
	s.add(t, "k1", keys[0], jwkset.AlgRS256)
	a := newJWTAuth(t, s, nil)
	h, err := hub.New(hub.Config{}, hub.NewMemory(hub.MemoryConfig{}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.WSHandler(hub.WSConfig{Guard: a}))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	})
	c := claims()
	c["exp"] = time.Now().Add(2 * time.Second).Unix()
	tok := sign(t, jwt.SigningMethodRS256, "k1", keys[0], c)
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+"?access_token="+tok,
		&websocket.DialOptions{Subprotocols: []string{"switchboard.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("the connection ended without a close frame: %v", err)
		}
		if ce.Code != websocket.StatusPolicyViolation || ce.Reason != "expired" {
			t.Fatalf("closed with %d %q, want 1008 \"expired\"", ce.Code, ce.Reason)
		}
		return
	}
}
