package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/switchboard/switchboard/hub/auth"
)

// HTTPTLS is the HTTP server's certificate (keys http.tls.*): both files
// or neither. They are read again on SIGHUP.
type HTTPTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Enabled reports whether the server serves HTTPS.
func (t HTTPTLS) Enabled() bool { return t.CertFile != "" }

// JWT lets bearer tokens be JWTs (keys auth.jwt.*); off unless jwks_url,
// public_key_files or hmac_secret is set.
type JWT struct {
	JWKSURL        string        `mapstructure:"jwks_url"`
	JWKSRefreshMin time.Duration `mapstructure:"jwks_refresh_min"`
	PublicKeyFiles []string      `mapstructure:"public_key_files"`
	HMACSecret     string        `mapstructure:"hmac_secret"`
	Issuer         string        `mapstructure:"issuer"`
	Audience       string        `mapstructure:"audience"`
	Algorithms     []string      `mapstructure:"algorithms"`
	RoleClaim      string        `mapstructure:"role_claim"`
	ChannelsClaim  string        `mapstructure:"channels_claim"`
	NameClaim      string        `mapstructure:"name_claim"`
	Leeway         time.Duration `mapstructure:"leeway"`
}

// AuthJWT is the auth package's JWT configuration.
func (c Config) AuthJWT() auth.JWTConfig {
	j := c.Auth.JWT
	return auth.JWTConfig{
		JWKSURL: j.JWKSURL, JWKSRefreshMin: j.JWKSRefreshMin, PublicKeyFiles: j.PublicKeyFiles,
		HMACSecret: j.HMACSecret, Issuer: j.Issuer, Audience: j.Audience, Algorithms: j.Algorithms,
		RoleClaim: j.RoleClaim, ChannelsClaim: j.ChannelsClaim, NameClaim: j.NameClaim, Leeway: j.Leeway,
	}
}

// httpTLS checks http.tls.* and http.trusted_proxies.
func (v *validator) httpTLS(c Config) {
	t := c.HTTP.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.fail("http.tls.key_file", "is needed with http.tls.cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		v.fail("http.tls.cert_file", "is needed with http.tls.key_file")
	case t.CertFile != "":
		if _, err := auth.NewCertificate(t.CertFile, t.KeyFile, nil); err != nil {
			v.fail("http.tls.cert_file", "%s", strings.TrimPrefix(err.Error(), "auth: "))
		}
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := auth.NewTrustedProxies([]string{p}); err != nil {
			v.fail(indexKey("http.trusted_proxies", i), "%q is not a CIDR (10.0.0.0/8) or an address", p)
		} else if pf, err := netip.ParsePrefix(p); err == nil && pf.Bits() == 0 {
			v.fail(indexKey("http.trusted_proxies", i), "%q trusts every address: any client could name its own address and claim HTTPS", p)
		}
	}
}

// authJWT checks auth.jwt.*.
func (v *validator) authJWT(c Config) {
	j := c.Auth.JWT
	if j.JWKSURL != "" {
		u, err := url.Parse(j.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.fail("auth.jwt.jwks_url", "%q is not an http(s) URL", j.JWKSURL)
		}
	}
	if j.JWKSRefreshMin < 0 {
		v.fail("auth.jwt.jwks_refresh_min", "must not be negative, got %s", j.JWKSRefreshMin)
	}
	if j.HMACSecret != "" && len(j.HMACSecret) < 32 {
		v.fail("auth.jwt.hmac_secret", "must be at least 32 bytes, got %d", len(j.HMACSecret))
	}
	if j.Leeway < 0 {
		v.fail("auth.jwt.leeway", "must not be negative, got %s", j.Leeway)
	}
	for i, a := range j.Algorithms {
		if strings.EqualFold(a, "none") {
			v.fail(indexKey("auth.jwt.algorithms", i), "none is never accepted")
		} else if !slices.Contains(jwtAlgorithms, a) {
			v.fail(indexKey("auth.jwt.algorithms", i), "%q is not one of %s", a, strings.Join(jwtAlgorithms, ", "))
		}
	}
	for i, f := range j.PublicKeyFiles {
		if _, err := auth.ReadPublicKeys(f); err != nil {
			v.fail(indexKey("auth.jwt.public_key_files", i), "%v", err)
		}
	}
	for i, a := range j.Algorithms {
		hs := strings.HasPrefix(a, "HS")
		if hs && j.HMACSecret == "" {
			v.fail(indexKey("auth.jwt.algorithms", i), "%s needs auth.jwt.hmac_secret", a)
		}
		if !hs && slices.Contains(jwtAlgorithms, a) && j.JWKSURL == "" && len(j.PublicKeyFiles) == 0 {
			v.fail(indexKey("auth.jwt.algorithms", i), "%s needs auth.jwt.jwks_url or auth.jwt.public_key_files", a)
		}
	}
}

func indexKey(key string, i int) string { return fmt.Sprintf("%s[%d]", key, i) }

// jwtAlgorithms are the alg values auth.jwt.algorithms may list.
var jwtAlgorithms = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
