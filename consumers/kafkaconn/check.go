package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/segmentio/kafka-go"
)

// Check builds the Settings of cfg and asks the brokers, in order, until
// one answers a metadata request over them; see Settings.Check.
func Check(ctx context.Context, cfg Config, brokers []string) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Check(ctx, brokers)
}

// Check connects to the brokers in order, each within the dial timeout,
// and returns nil at the first that answers a metadata request over TLS
// and SASL as configured. Otherwise its error wraps one of
// ErrUnreachable, ErrTLSVerification, ErrTLSHandshake and ErrAuthRefused,
// and reads, for example:
//
//	kafkaconn: broker 10.0.0.7:9096: authentication refused (SASL SCRAM-SHA-512 as "switchboard"): ...
//
// A TLS or SASL refusal is returned at once, as every broker of a cluster
// would say the same; an unreachable broker is passed over for the next,
// and the error names every one of them when none answers.
func (s *Settings) Check(ctx context.Context, brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("kafkaconn: no brokers to check")
	}
	var errs []error
	for _, b := range brokers {
		err := s.checkOne(ctx, b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrUnreachable) {
			return err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// checkOne opens a connection to broker as every client does, in steps,
// so a failure says which step failed: TCP, then the TLS handshake, then
// SASL (kafka-go's Dialer), then a metadata request.
func (s *Settings) checkOne(ctx context.Context, broker string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	var connected bool
	var tlsErr error
	d := s.Dialer()
	d.TLS = nil // DialFunc does the handshake, to tell its failure apart
	d.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		connected = true
		if s.tls == nil {
			return raw, nil
		}
		tc := s.tls.Clone()
		if tc.ServerName == "" {
			// As kafka-go does: the host of the address.
			if host, _, err := net.SplitHostPort(addr); err == nil {
				tc.ServerName = host
			}
		}
		c := tls.Client(raw, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			tlsErr = err
			return nil, err
		}
		return c, nil
	}

	conn, err := d.DialContext(ctx, "tcp", broker)
	if err != nil {
		switch {
		case !connected:
			return s.fail(broker, ErrUnreachable, "", err)
		case tlsErr != nil:
			return s.failTLS(broker, tlsErr)
		case refusedCertificate(err):
			return s.fail(broker, ErrTLSVerification, refusedOurs, err)
		case errors.Is(err, kafka.SASLAuthenticationFailed), errors.Is(err, kafka.UnsupportedSASLMechanism),
			errors.Is(err, kafka.IllegalSASLState), s.mech != nil && !brokenConn(err):
			return s.fail(broker, ErrAuthRefused, " ("+s.who()+")", err)
		default:
			return s.fail(broker, ErrUnreachable, " (the connection closed at the SASL handshake, as a TLS listener does to a plaintext client)", err)
		}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Brokers(); err != nil {
		switch {
		case refusedCertificate(err):
			return s.fail(broker, ErrTLSVerification, refusedOurs, err)
		case s.mech == nil && brokenConn(err):
			return s.fail(broker, ErrUnreachable, " (the connection closed at the first request, as a listener that expects TLS or SASL does)", err)
		}
		return s.fail(broker, ErrUnreachable, " (no answer to a metadata request)", err)
	}
	return nil
}

// who names the SASL identity tried, for an error.
func (s *Settings) who() string {
	if s.mech == nil {
		return "no SASL configured"
	}
	return fmt.Sprintf("SASL %s as %q", s.mechName, s.user)
}

// refusedOurs is the detail of a certificate the broker refused.
const refusedOurs = " (the broker refused our client certificate)"

// fail is the error of one broker's check: of kind, with a detail that
// starts with its own separator (or is empty), caused by err.
func (s *Settings) fail(broker string, kind error, detail string, err error) error {
	return fmt.Errorf("kafkaconn: broker %s: %w%s: %w", broker, kind, detail, err)
}

// failTLS says whether a failed handshake is a verification failure, on
// either side, or another TLS failure.
func (s *Settings) failTLS(broker string, err error) error {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &authority), errors.As(err, &hostname), errors.As(err, &invalid):
		return s.fail(broker, ErrTLSVerification, " (the broker's certificate)", err)
	case refusedCertificate(err):
		return s.fail(broker, ErrTLSVerification, refusedOurs, err)
	}
	return s.fail(broker, ErrTLSHandshake, " (is the listener TLS?)", err)
}

// certificateAlerts are the TLS alerts (RFC 8446 §6.2) a peer sends when
// it refuses a certificate: bad_certificate, unsupported_certificate,
// certificate_revoked, certificate_expired, certificate_unknown,
// unknown_ca, access_denied and certificate_required.
var certificateAlerts = []tls.AlertError{42, 43, 44, 45, 46, 48, 49, 116}

// refusedCertificate reports whether err is a TLS alert from the broker
// that refuses our certificate. With TLS 1.3 it arrives after the
// handshake, at the first read: SASL or the first request fails with it.
func refusedCertificate(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	// crypto/tls reports a received alert as an OpError around its
	// unexported alert type; AlertError has the same text.
	for _, a := range certificateAlerts {
		if op.Err.Error() == a.Error() {
			return true
		}
	}
	return false
}

// brokenConn reports whether err is the connection failing (closed,
// reset, timed out) rather than the broker answering.
func brokenConn(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &ne)
}
