package redisbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options says which Redis to use, in one of three forms: URL (one server),
// SentinelMaster with SentinelAddrs (a primary and its replicas watched by
// Sentinel), or ClusterAddrs (a Redis Cluster). Exactly one form is set.
type Options struct {
	// URL is redis://, rediss:// (TLS) or unix://.
	URL string
	// SentinelMaster is the name Sentinel knows the primary by;
	// SentinelAddrs are the sentinels (host:port). SentinelPassword
	// authenticates to the sentinels and to the servers they name.
	SentinelMaster   string
	SentinelAddrs    []string
	SentinelPassword string
	// ClusterAddrs are some of the Cluster's nodes (host:port); the others
	// are discovered. ClusterPassword authenticates to every node.
	ClusterAddrs    []string
	ClusterPassword string
	// TLS configures TLS for the Sentinel and Cluster forms (the URL form
	// turns it on with rediss://, and then takes the files too).
	TLS TLS
	// DialTimeout bounds opening one connection; zero means go-redis's
	// default (5s).
	DialTimeout time.Duration
}

// TLS configures TLS to Redis.
type TLS struct {
	// Enabled turns TLS on for the Sentinel and Cluster forms.
	Enabled bool
	// CAFile is a PEM file of the CAs that sign the servers' certificates;
	// empty means the system's.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that require one.
	CertFile, KeyFile string
}

// Form names which form o uses: "url", "sentinel", "cluster", or "" when
// none is set (the in-memory backplane).
func (o Options) Form() string {
	switch {
	case o.URL != "":
		return "url"
	case o.SentinelMaster != "" || len(o.SentinelAddrs) > 0:
		return "sentinel"
	case len(o.ClusterAddrs) > 0:
		return "cluster"
	}
	return ""
}

// Configured reports whether o names a Redis at all.
func (o Options) Configured() bool {
	return o.URL != "" || o.SentinelMaster != "" || len(o.SentinelAddrs) > 0 || len(o.ClusterAddrs) > 0
}

// Check reports what makes o unusable, without connecting: not exactly one
// form, a form without its parts, TLS settings the form does not take, or
// certificate files that do not load.
func (o Options) Check() error {
	var set []string // the first key set of each form
	if o.URL != "" {
		set = append(set, "redis.url")
	}
	switch {
	case o.SentinelMaster != "":
		set = append(set, "redis.sentinel.master")
	case len(o.SentinelAddrs) > 0:
		set = append(set, "redis.sentinel.addrs")
	}
	if len(o.ClusterAddrs) > 0 {
		set = append(set, "redis.cluster.addrs")
	}
	if len(set) > 1 {
		return optErr(set[1], "is set with "+set[0]+": set one of redis.url, redis.sentinel.* and redis.cluster.addrs")
	}
	_, err := o.universal()
	return err
}

// OptionError is a problem of Options, naming the configuration key.
type OptionError struct {
	Key, Reason string
	Err         error
}

// Error is "redisbus: <key>: <reason>".
func (e *OptionError) Error() string { return "redisbus: " + e.Key + ": " + e.Reason }

// Unwrap returns the error behind the reason, if any (a file that did not
// open).
func (e *OptionError) Unwrap() error { return e.Err }

func optErr(key, reason string) error { return &OptionError{Key: key, Reason: reason} }

func optErrf(key, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &OptionError{Key: key, Reason: err.Error(), Err: errors.Unwrap(err)}
}

// tlsFileKey is the key of the first TLS file set, or "".
func (t TLS) tlsFileKey() string {
	switch {
	case t.CAFile != "":
		return "redis.tls.ca_file"
	case t.CertFile != "":
		return "redis.tls.cert_file"
	case t.KeyFile != "":
		return "redis.tls.key_file"
	}
	return ""
}

// NewClient returns the client of o without connecting: a *redis.Client for
// a URL, a failover client (*redis.Client) for Sentinel, a
// *redis.ClusterClient for a Cluster.
func NewClient(o Options) (redis.UniversalClient, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	u, _ := o.universal() // Check built it
	switch o.Form() {
	case "url":
		return redis.NewClient(u.opts), nil
	case "sentinel":
		return redis.NewFailoverClient(u.failover), nil
	case "cluster":
		return redis.NewClusterClient(u.cluster), nil
	}
	return nil, errors.New("redisbus: no Redis configured")
}

// Connect returns the client of o once Redis answers a PING.
func Connect(ctx context.Context, o Options) (redis.UniversalClient, error) {
	rdb, err := NewClient(o)
	if err != nil {
		return nil, err
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redisbus: %s: %w", o.Form(), err)
	}
	return rdb, nil
}

// Dial connects to the Redis of o and starts a bus over it.
func Dial(ctx context.Context, o Options, cfg Config, log *slog.Logger) (*Bus, error) {
	rdb, err := NewClient(o)
	if err != nil {
		return nil, err
	}
	return New(ctx, rdb, cfg, log)
}

type universal struct {
	opts     *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// universal builds the go-redis options of o's form.
func (o Options) universal() (universal, error) {
	var u universal
	t := o.TLS
	files := t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
	if o.SentinelPassword != "" && o.Form() != "sentinel" {
		return u, optErr("redis.sentinel.password", "is set without redis.sentinel.master and redis.sentinel.addrs")
	}
	if o.ClusterPassword != "" && o.Form() != "cluster" {
		return u, optErr("redis.cluster.password", "is set without redis.cluster.addrs")
	}
	switch o.Form() {
	case "url":
		if t.Enabled {
			return u, optErr("redis.tls.enabled", "is for redis.sentinel and redis.cluster: use rediss:// in redis.url")
		}
		opts, err := redis.ParseURL(o.URL)
		if err != nil {
			// go-redis's message may repeat the password.
			return u, optErr("redis.url", "is not a redis://, rediss:// or unix:// URL")
		}
		if files && opts.TLSConfig == nil {
			return u, optErr(t.tlsFileKey(), "needs TLS: use rediss:// in redis.url")
		}
		if opts.TLSConfig != nil {
			if err := t.apply(opts.TLSConfig); err != nil {
				return u, err
			}
		}
		o.dial(&opts.DialTimeout)
		u.opts = opts
	case "sentinel":
		if o.SentinelMaster == "" {
			return u, optErr("redis.sentinel.master", "is needed with redis.sentinel.addrs")
		}
		if len(o.SentinelAddrs) == 0 {
			return u, optErr("redis.sentinel.addrs", "is needed with redis.sentinel.master")
		}
		tc, err := o.tlsConfig()
		if err != nil {
			return u, err
		}
		u.failover = &redis.FailoverOptions{
			MasterName:       o.SentinelMaster,
			SentinelAddrs:    own(o.SentinelAddrs),
			SentinelPassword: o.SentinelPassword,
			Password:         o.SentinelPassword,
			TLSConfig:        tc,
		}
		o.dial(&u.failover.DialTimeout)
	case "cluster":
		tc, err := o.tlsConfig()
		if err != nil {
			return u, err
		}
		u.cluster = &redis.ClusterOptions{
			Addrs:     own(o.ClusterAddrs),
			Password:  o.ClusterPassword,
			TLSConfig: tc,
		}
		o.dial(&u.cluster.DialTimeout)
	default:
		if k := t.tlsFileKey(); k != "" || t.Enabled {
			if k == "" {
				k = "redis.tls.enabled"
			}
			return u, optErr(k, "is set, but no Redis is: set redis.url, redis.sentinel.* or redis.cluster.addrs")
		}
	}
	return u, nil
}

// own copies addrs with no room to grow: go-redis keeps the slice it is
// given and appends the nodes it discovers to it, which would write into
// the caller's array (and race with another client made from it).
func own(addrs []string) []string { return slices.Clip(slices.Clone(addrs)) }

func (o Options) dial(d *time.Duration) {
	if o.DialTimeout > 0 {
		*d = o.DialTimeout
	}
}

// tlsConfig is the TLS of the Sentinel and Cluster forms: nil unless
// TLS.Enabled.
func (o Options) tlsConfig() (*tls.Config, error) {
	t := o.TLS
	if !t.Enabled {
		if k := t.tlsFileKey(); k != "" {
			return nil, optErr(k, "is set, but redis.tls.enabled is false: the connection would be plaintext")
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if err := t.apply(c); err != nil {
		return nil, err
	}
	return c, nil
}

// apply adds t's CA and client certificate to c.
func (t TLS) apply(c *tls.Config) error {
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return optErrf("redis.tls.ca_file", "%w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return optErrf("redis.tls.ca_file", "%s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return optErr("redis.tls.key_file", "is needed with redis.tls.cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		return optErr("redis.tls.cert_file", "is needed with redis.tls.key_file")
	case t.CertFile != "":
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return optErrf("redis.tls.cert_file", "%s", strings.TrimPrefix(err.Error(), "tls: "))
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return nil
}
