package auth

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA signs server certificates for 127.0.0.1 that a client trusting
// Pool verifies.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	Pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, Pool: pool}
}

// issue writes a certificate for 127.0.0.1 named cn and its key to
// certFile and keyFile.
func (ca *testCA) issue(t *testing.T, cn, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// peerName is the common name of the certificate a new TLS connection to
// addr is served.
func peerName(t *testing.T, addr string, pool *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestCertificateReload: a reload is seen by new connections while one
// opened before keeps streaming; a bad pair keeps the old certificate and
// says why; SIGHUP reloads once ReloadOnSignal is listening.
func TestCertificateReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.issue(t, "first", certFile, keyFile)
	var logs lockedBuffer
	c, err := NewCertificate(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}

	// A stream that writes a line whenever asked.
	next := make(chan string)
	hs := &http.Server{TLSConfig: c.TLSConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case s := <-next:
				fmt.Fprintf(w, "data: %s\n\n", s)
				w.(http.Flusher).Flush()
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	addr := ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	lines := bufio.NewReader(resp.Body)
	read := func(want string) {
		t.Helper()
		next <- want
		for {
			l, err := lines.ReadString('\n')
			if err != nil {
				t.Fatalf("the stream opened before the reload ended: %v", err)
			}
			if strings.TrimSpace(l) == "data: "+want {
				return
			}
		}
	}
	read("before")

	ca.issue(t, "second", certFile, keyFile)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := peerName(t, addr, ca.Pool); got != "second" {
		t.Errorf("a new connection after the reload got %q, want second", got)
	}
	read("after the reload")

	// A bad pair: the key of another certificate.
	other := filepath.Join(dir, "other.key")
	ca.issue(t, "third", filepath.Join(dir, "other.crt"), other)
	ca.issue(t, "fourth", certFile, keyFile)
	b, _ := os.ReadFile(other)
	os.WriteFile(keyFile, b, 0o600)
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("a mismatched pair: %v, want an error naming %s", err, certFile)
	}
	if got := peerName(t, addr, ca.Pool); got != "second" {
		t.Errorf("after a failed reload a new connection got %q, want the old second", got)
	}
	if !strings.Contains(logs.String(), "was not reloaded") {
		t.Errorf("the failed reload was not logged: %s", logs.String())
	}
	read("after a failed reload")

	// SIGHUP: caught by ReloadOnSignal, which registers before it returns.
	ca.issue(t, "fifth", certFile, keyFile)
	stop := c.ReloadOnSignal(syscall.SIGHUP)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for peerName(t, addr, ca.Pool) != "fifth" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	read("after SIGHUP")
}
