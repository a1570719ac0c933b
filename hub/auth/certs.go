package auth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
)

// Certificate holds the HTTP server's TLS certificate (http.tls.cert_file
// and key_file) and serves it to every new TLS handshake. Reload reads the
// pair again: connections already open keep going, new ones get the new
// certificate, and a pair that does not load leaves the old one in place.
type Certificate struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]
}

// NewCertificate loads the pair; an error names the file at fault.
func NewCertificate(certFile, keyFile string, log *slog.Logger) (*Certificate, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Certificate{certFile: certFile, keyFile: keyFile, log: log}
	cert, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cur.Store(cert)
	return c, nil
}

func (c *Certificate) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("auth: TLS certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return &cert, nil
}

// Reload reads the pair again and serves it from the next handshake on.
// On error the certificate in use stays, and the error says why.
func (c *Certificate) Reload() error {
	cert, err := c.load()
	if err != nil {
		c.log.Error("the TLS certificate was not reloaded: the one in use stays", "err", err)
		return err
	}
	c.cur.Store(cert)
	attrs := []any{"cert_file", c.certFile}
	if cert.Leaf != nil {
		attrs = append(attrs, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	c.log.Info("TLS certificate reloaded", attrs...)
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// TLSConfig is the server's TLS configuration: this certificate, TLS 1.2
// or later.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: c.GetCertificate, MinVersion: tls.VersionTLS12}
}

// ReloadOnSignal reloads the pair each time one of sigs (SIGHUP) arrives,
// until stop is called; the signals are caught from when it returns, and
// stop returns once they no longer are.
func (c *Certificate) ReloadOnSignal(sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				_ = c.Reload() // logged
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			wg.Wait()
		})
	}
}
