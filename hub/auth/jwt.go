package auth

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults for JWTConfig.
const (
	// DefaultJWKSRefreshMin is the shortest time between two fetches of the
	// JWKS caused by tokens with an unknown kid: a stream of made-up kids
	// never turns into a stream of requests to the identity provider.
	DefaultJWKSRefreshMin = 5 * time.Minute
	// jwksFetchWait bounds the fetch of the JWKS that an unknown kid
	// starts, and the wait for the limiter's turn to fetch.
	jwksFetchWait = 5 * time.Second
	// DefaultJWKSRefresh is how often the JWKS is fetched anyway.
	DefaultJWKSRefresh = time.Hour
	// DefaultJWTLeeway is the clock skew a configuration gets unless it
	// says otherwise (JWTConfig.Leeway itself is taken as given: 0 is none).
	DefaultJWTLeeway = 30 * time.Second
	// DefaultRoleClaim, DefaultChannelsClaim and DefaultNameClaim are the
	// claims a JWT principal is read from.
	DefaultRoleClaim     = "role"
	DefaultChannelsClaim = "channels"
	DefaultNameClaim     = "sub"
)

// hmacAlgorithms and publicKeyAlgorithms are the algorithms a JWT may be
// signed with; "none" is never one of them.
var (
	hmacAlgorithms      = []string{"HS256", "HS384", "HS512"}
	publicKeyAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// JWTConfig lets bearer tokens be JWTs besides the configured principals'
// tokens. It is off unless one key source is set: JWKSURL, PublicKeyFiles
// or HMACSecret.
type JWTConfig struct {
	// JWKSURL is the identity provider's JSON Web Key Set. It is fetched at
	// start and every DefaultJWKSRefresh, and again when a token names an
	// unknown kid, at most once per JWKSRefreshMin.
	JWKSURL        string
	JWKSRefreshMin time.Duration
	// PublicKeyFiles are PEM files of public keys (PKIX, PKCS#1 or
	// certificates) that verify tokens signed with RS*, PS*, ES* or EdDSA.
	PublicKeyFiles []string
	// HMACSecret verifies HS256/384/512 tokens; at least 32 bytes.
	HMACSecret string
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer   string
	Audience string
	// Algorithms are the accepted alg values; empty accepts those of the
	// configured key sources (HS* with HMACSecret, the others with keys).
	Algorithms []string
	// RoleClaim, ChannelsClaim and NameClaim name the claims of the
	// principal's role (moderator, partner or police), channel grants and
	// name. A dotted name ("realm.role") reaches into nested objects.
	RoleClaim     string
	ChannelsClaim string
	NameClaim     string
	// Leeway is the clock skew allowed on exp, nbf and iat. A connection
	// admitted with a JWT ends at exp plus Leeway.
	Leeway time.Duration
	// Client fetches the JWKS; nil is http.DefaultClient.
	Client *http.Client
}

// Enabled reports whether JWTs are accepted at all.
func (c JWTConfig) Enabled() bool {
	return c.JWKSURL != "" || len(c.PublicKeyFiles) > 0 || c.HMACSecret != ""
}

// jwtVerifier checks JWTs and turns their claims into principals.
type jwtVerifier struct {
	cfg    JWTConfig
	parser *jwt.Parser
	hmac   []byte
	keys   []crypto.PublicKey // from PublicKeyFiles
	jwks   keyfunc.Keyfunc    // nil without JWKSURL
	stop   context.CancelFunc // ends the JWKS refresh goroutine
}

// newJWTVerifier checks cfg, reads the key files and starts the JWKS cache.
func newJWTVerifier(cfg JWTConfig, log *slog.Logger) (*jwtVerifier, error) {
	if cfg.JWKSRefreshMin == 0 {
		cfg.JWKSRefreshMin = DefaultJWKSRefreshMin
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = DefaultRoleClaim
	}
	if cfg.ChannelsClaim == "" {
		cfg.ChannelsClaim = DefaultChannelsClaim
	}
	if cfg.NameClaim == "" {
		cfg.NameClaim = DefaultNameClaim
	}
	switch {
	case cfg.JWKSRefreshMin < 0:
		return nil, fmt.Errorf("auth: jwt: JWKSRefreshMin must not be negative, got %s", cfg.JWKSRefreshMin)
	case cfg.Leeway < 0:
		return nil, fmt.Errorf("auth: jwt: Leeway must not be negative, got %s", cfg.Leeway)
	case cfg.HMACSecret != "" && len(cfg.HMACSecret) < 32:
		return nil, fmt.Errorf("auth: jwt: the HMAC secret must be at least 32 bytes, got %d", len(cfg.HMACSecret))
	}
	v := &jwtVerifier{cfg: cfg}
	if cfg.HMACSecret != "" {
		v.hmac = []byte(cfg.HMACSecret)
	}
	for i, f := range cfg.PublicKeyFiles {
		keys, err := ReadPublicKeys(f)
		if err != nil {
			return nil, fmt.Errorf("auth: jwt: public_key_files[%d]: %w", i, err)
		}
		v.keys = append(v.keys, keys...)
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		if v.hmac != nil {
			algs = append(algs, hmacAlgorithms...)
		}
		if cfg.JWKSURL != "" || len(v.keys) > 0 {
			algs = append(algs, publicKeyAlgorithms...)
		}
	}
	for i, alg := range algs {
		switch {
		case slices.Contains(hmacAlgorithms, alg):
			if v.hmac == nil {
				return nil, fmt.Errorf("auth: jwt: algorithms[%d]: %s needs an HMAC secret", i, alg)
			}
		case slices.Contains(publicKeyAlgorithms, alg):
			if cfg.JWKSURL == "" && len(v.keys) == 0 {
				return nil, fmt.Errorf("auth: jwt: algorithms[%d]: %s needs a JWKS URL or public key files", i, alg)
			}
		default:
			return nil, fmt.Errorf("auth: jwt: algorithms[%d]: %q is not one of %s", i, alg,
				strings.Join(append(slices.Clone(hmacAlgorithms), publicKeyAlgorithms...), ", "))
		}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(algs), jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway), jwt.WithIssuedAt()}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	if cfg.JWKSURL != "" {
		ctx, stop := context.WithCancel(context.Background())
		v.stop = stop
		store, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
			Client:                    cfg.Client,
			Ctx:                       ctx,
			HTTPTimeout:               10 * time.Second,
			NoErrorReturnFirstHTTPReq: true,
			RefreshInterval:           DefaultJWKSRefresh,
			RefreshErrorHandler: func(_ context.Context, err error) {
				log.Error("the JWKS could not be fetched; tokens it would verify are refused until it is", "url", cfg.JWKSURL, "err", err)
			},
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("auth: jwt: JWKS %s: %w", cfg.JWKSURL, err)
		}
		client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
			HTTPURLs: map[string]jwkset.Storage{cfg.JWKSURL: store},
			// An unknown kid refreshes at once when the limiter allows and
			// is refused at once when its next turn is more than
			// jwksFetchWait away (the limiter never sleeps past its
			// context's deadline). The same deadline bounds the fetch
			// itself, so it must leave room for one: with a millisecond,
			// a fetch on a new connection failed.
			RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.JWKSRefreshMin), 1),
			RateLimitWaitMax:  jwksFetchWait,
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("auth: jwt: JWKS %s: %w", cfg.JWKSURL, err)
		}
		v.jwks, err = keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: client,
			UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
		if err != nil {
			stop()
			return nil, fmt.Errorf("auth: jwt: %w", err)
		}
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		log.Warn("auth.jwt: set issuer and audience: without them a token the same keys signed for another service or issuer is accepted")
	}
	return v, nil
}

// close ends the JWKS refresh.
func (v *jwtVerifier) close() {
	if v != nil && v.stop != nil {
		v.stop()
	}
}

// ReadPublicKeys reads every public key (PKIX, PKCS#1 or a certificate's)
// of a PEM file, as public_key_files wants them.
func ReadPublicKeys(file string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var keys []crypto.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			keys = append(keys, k)
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			keys = append(keys, k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			keys = append(keys, c.PublicKey)
		default:
			return nil, fmt.Errorf("%s: a %q PEM block is not a public key", file, blk.Type)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM public key", file)
	}
	return keys, nil
}

// looksLikeJWT reports whether tok has the form of a signed JWT (three
// parts), so a wrong static token is not parsed.
func looksLikeJWT(tok string) bool {
	return strings.Count(tok, ".") == 2
}

// verify checks tok and returns its principal and when it expires (exp
// plus the leeway). Errors say why without the token.
func (v *jwtVerifier) verify(ctx context.Context, tok string) (*Principal, time.Time, error) {
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) { return v.key(ctx, t) })
	if err != nil {
		return nil, time.Time{}, jwtReason(err)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, time.Time{}, errors.New("no exp")
	}
	p, err := v.principal(claims)
	if err != nil {
		return nil, time.Time{}, err
	}
	return p, exp.Add(v.cfg.Leeway), nil
}

// key finds the keys that may verify t: the HMAC secret for HS*, never a
// public key (key confusion), and the JWKS key of its kid or the PEM keys
// for the others.
func (v *jwtVerifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		if v.hmac == nil {
			return nil, errors.New("no HMAC secret")
		}
		return v.hmac, nil
	}
	set := jwt.VerificationKeySet{}
	if v.jwks != nil {
		if _, hasKid := t.Header["kid"]; hasKid {
			k, err := v.jwks.KeyfuncCtx(ctx)(t)
			if err == nil {
				return k, nil
			}
			if len(v.keys) == 0 {
				return nil, errors.New("unknown kid")
			}
		} else if ks, err := v.jwks.VerificationKeySet(ctx); err == nil {
			set.Keys = append(set.Keys, ks.Keys...)
		}
	}
	for _, k := range v.keys {
		set.Keys = append(set.Keys, k)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("no key")
	}
	return set, nil
}

// jwtReason shortens a parse error to the reason a caller may read.
func jwtReason(err error) error {
	for _, e := range []error{jwt.ErrTokenExpired, jwt.ErrTokenNotValidYet, jwt.ErrTokenUsedBeforeIssued,
		jwt.ErrTokenInvalidAudience, jwt.ErrTokenInvalidIssuer, jwt.ErrTokenRequiredClaimMissing,
		jwt.ErrTokenSignatureInvalid, jwt.ErrTokenUnverifiable, jwt.ErrTokenMalformed} {
		if errors.Is(err, e) {
			return e
		}
	}
	return errors.New("token is invalid")
}

// principal reads the principal out of verified claims.
func (v *jwtVerifier) principal(c jwt.MapClaims) (*Principal, error) {
	name, _ := claim(c, v.cfg.NameClaim).(string)
	if name == "" {
		return nil, fmt.Errorf("the %s claim is missing or not a string", v.cfg.NameClaim)
	}
	role, err := roleClaim(claim(c, v.cfg.RoleClaim))
	if err != nil {
		return nil, fmt.Errorf("the %s claim %w", v.cfg.RoleClaim, err)
	}
	var grants []string
	switch ch := claim(c, v.cfg.ChannelsClaim).(type) {
	case nil:
	case string:
		grants = strings.Fields(ch)
	case []any:
		for _, g := range ch {
			s, ok := g.(string)
			if !ok {
				return nil, fmt.Errorf("the %s claim must hold strings", v.cfg.ChannelsClaim)
			}
			grants = append(grants, s)
		}
	default:
		return nil, fmt.Errorf("the %s claim must be a string or a list of strings", v.cfg.ChannelsClaim)
	}
	return &Principal{Name: name, Role: role, Grants: grants, jwt: true}, nil
}

// claim returns claim name of c, reaching into nested objects for a
// dotted name that is not itself a claim.
func claim(c map[string]any, name string) any {
	if v, ok := c[name]; ok {
		return v
	}
	first, rest, ok := strings.Cut(name, ".")
	if !ok {
		return nil
	}
	inner, ok := c[first].(map[string]any)
	if !ok {
		return nil
	}
	return claim(inner, rest)
}

// roleClaim reads a role: a string, or a list holding exactly one of the
// roles (identity providers often send a list of roles).
func roleClaim(v any) (Role, error) {
	known := func(s string) bool {
		r := Role(s)
		return r == RoleModerator || r == RolePartner || r == RolePolice
	}
	switch r := v.(type) {
	case string:
		if known(r) {
			return Role(r), nil
		}
		return "", fmt.Errorf("must be moderator, partner or police")
	case []any:
		var found Role
		for _, e := range r {
			if s, ok := e.(string); ok && known(s) {
				if found != "" && found != Role(s) {
					return "", fmt.Errorf("names more than one of moderator, partner and police")
				}
				found = Role(s)
			}
		}
		if found != "" {
			return found, nil
		}
	}
	return "", fmt.Errorf("must be moderator, partner or police")
}
