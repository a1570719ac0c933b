package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateHTTPTLSAndJWT: each bad http.tls.*, http.trusted_proxies or
// auth.jwt.* value is refused with a message naming its key.
func TestValidateHTTPTLSAndJWT(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 32)
	tests := []struct {
		name   string
		change func(c *Config)
		want   string // a part of the message; empty: valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"cert without key", func(c *Config) { c.HTTP.TLS.CertFile = junk }, "config: http.tls.key_file: is needed with http.tls.cert_file"},
		{"key without cert", func(c *Config) { c.HTTP.TLS.KeyFile = junk }, "config: http.tls.cert_file: is needed with http.tls.key_file"},
		{"bad pair", func(c *Config) { c.HTTP.TLS.CertFile, c.HTTP.TLS.KeyFile = junk, junk }, "config: http.tls.cert_file: TLS certificate " + junk},
		{"proxies", func(c *Config) { c.HTTP.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "::1"} }, ""},
		{"bad proxy", func(c *Config) { c.HTTP.TrustedProxies = []string{"10.0.0.0/8", "nope"} }, `config: http.trusted_proxies[1]: "nope" is not a CIDR`},
		{"every address", func(c *Config) { c.HTTP.TrustedProxies = []string{"0.0.0.0/0"} }, "config: http.trusted_proxies[0]: \"0.0.0.0/0\" trusts every address"},
		{"jwks", func(c *Config) { c.Auth.JWT.JWKSURL = "https://idp.example/jwks" }, ""},
		{"jwks url", func(c *Config) { c.Auth.JWT.JWKSURL = "idp.example/jwks" }, `config: auth.jwt.jwks_url: "idp.example/jwks" is not an http(s) URL`},
		{"refresh", func(c *Config) { c.Auth.JWT.JWKSRefreshMin = -1 }, "config: auth.jwt.jwks_refresh_min: must not be negative"},
		{"short secret", func(c *Config) { c.Auth.JWT.HMACSecret = "short" }, "config: auth.jwt.hmac_secret: must be at least 32 bytes, got 5"},
		{"leeway", func(c *Config) { c.Auth.JWT.Leeway = -1 }, "config: auth.jwt.leeway: must not be negative"},
		{"none", func(c *Config) { c.Auth.JWT.HMACSecret = secret; c.Auth.JWT.Algorithms = []string{"HS256", "none"} }, "config: auth.jwt.algorithms[1]: none is never accepted"},
		{"unknown alg", func(c *Config) { c.Auth.JWT.HMACSecret = secret; c.Auth.JWT.Algorithms = []string{"HS257"} }, `config: auth.jwt.algorithms[0]: "HS257" is not one of`},
		{"HS without secret", func(c *Config) {
			c.Auth.JWT.JWKSURL = "https://idp.example/jwks"
			c.Auth.JWT.Algorithms = []string{"HS256"}
		}, "config: auth.jwt.algorithms[0]: HS256 needs auth.jwt.hmac_secret"},
		{"RS without keys", func(c *Config) { c.Auth.JWT.HMACSecret = secret; c.Auth.JWT.Algorithms = []string{"RS256"} }, "config: auth.jwt.algorithms[0]: RS256 needs auth.jwt.jwks_url or auth.jwt.public_key_files"},
		{"key file", func(c *Config) { c.Auth.JWT.PublicKeyFiles = []string{junk} }, "config: auth.jwt.public_key_files[0]: " + junk + ": no PEM public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := wantDefaults()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
