package auth

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the peers whose X-Forwarded-For and X-Forwarded-Proto
// are believed (http.trusted_proxies). A request from any other peer is
// taken as it arrived: its forwarding headers are ignored, so a client
// cannot name its own address or claim HTTPS.
type TrustedProxies struct {
	nets []netip.Prefix
}

// NewTrustedProxies parses CIDRs (a bare address is a /32 or /128).
func NewTrustedProxies(cidrs []string) (*TrustedProxies, error) {
	t := &TrustedProxies{}
	for i, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(c))
			if aerr != nil {
				return nil, fmt.Errorf("auth: trusted proxies[%d]: %q is not a CIDR or an address", i, c)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		t.nets = append(t.nets, p.Masked())
	}
	return t, nil
}

// trusts reports whether a is one of the trusted proxies.
func (t *TrustedProxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// SourceAddr is Config.SourceAddr behind trusted proxies: the peer, or,
// when the peer is trusted, the last address of X-Forwarded-For that is
// not a trusted proxy (each proxy appends the address it saw, so entries
// left of the first untrusted one may be made up by the client).
func (t *TrustedProxies) SourceAddr(r *http.Request) netip.Addr {
	peer := SourceAddr(r)
	if t == nil || !t.trusts(peer) {
		return peer
	}
	hops := forwardedFor(r.Header.Values("X-Forwarded-For"))
	src := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return src // a hop we cannot read: the last one we could
		}
		src = a.Unmap()
		if !t.trusts(src) {
			return src
		}
	}
	return src
}

// HTTPS is Config.HTTPS behind trusted proxies: the request came over TLS
// to this node, or a trusted peer says (X-Forwarded-Proto) it came over
// HTTPS to the proxy.
func (t *TrustedProxies) HTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if t == nil || !t.trusts(SourceAddr(r)) {
		return false
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// forwardedFor splits X-Forwarded-For header lines into their entries.
func forwardedFor(lines []string) []string {
	var hops []string
	for _, l := range lines {
		for h := range strings.SplitSeq(l, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	return hops
}
