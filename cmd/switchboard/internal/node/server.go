package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
)

// startHTTP listens on http.addr and serves the routes behind the HTTP
// guard, over TLS when http.tls is set.
func (a *Node) startHTTP() error {
	var err error
	a.ln, err = net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http.addr: %w", err)
	}
	// The guard bounds what a client holds without using it: a body's
	// time to arrive, ambiguous lengths, connections never authenticated.
	// The doors that hijack or stream keep their own deadlines.
	a.guard, err = hub.NewHTTPGuard(hub.HTTPGuardConfig{
		BodyTimeout:        a.cfg.HTTP.BodyTimeout,
		MaxBodyBytes:       a.cfg.HTTP.MaxBodyBytes,
		MaxUnauthenticated: a.cfg.Limits.UnauthenticatedConnections,
	}, a.log.With("component", "httpguard"))
	if err != nil {
		return err
	}
	if a.cfg.HTTP.TLS.Enabled() {
		a.cert, err = auth.NewCertificate(a.cfg.HTTP.TLS.CertFile, a.cfg.HTTP.TLS.KeyFile, a.log.With("component", "tls"))
		if err != nil {
			return fmt.Errorf("http.tls.cert_file: %w", err)
		}
		a.stopHUP = a.cert.ReloadOnSignal(syscall.SIGHUP)
	}
	a.srv = &http.Server{
		Handler:           hub.RequestLogClient(a.log, a.proxies.SourceAddr, a.guard.Handler(a.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       a.guard.ConnContext,
		ConnState:         a.guard.ConnState,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	ln := a.guard.Listener(a.ln)
	if a.cert != nil {
		// HTTP/1.1 only for now: the guard and the doors are proven on it
		// (WebSocket upgrades need it anyway).
		a.srv.TLSConfig = a.cert.TLSConfig()
		a.srv.TLSConfig.NextProtos = []string{"http/1.1"}
		a.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		ln = tls.NewListener(ln, a.srv.TLSConfig)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}
