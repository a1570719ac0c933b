package auth

import (
	"crypto/sha256"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// hostileHeaders are Authorization values an attacker or a broken client
// sends.
var hostileHeaders = []string{
	"",
	"Bearer",
	"Bearer ",
	"bearer " + modTok,
	"Bearer  " + modTok,
	"Bearer " + modTok + " ",
	"Bearer " + modTok + "\r\nX-Forwarded-For: 1.2.3.4",
	"Bearer\t" + modTok,
	"Bearer " + modTok + "\x00",
	"Bearer " + modTok + "\u00a0",
	"Bearer " + HashToken(modTok),
	"Basic " + modTok,
	"Bearer " + strings.Repeat("A", 5000),
	"Bearer ÿÿÿÿ",
	"Bearer \xff\xfe",
	"Bearer %00",
	"BEARER a b",
	" Bearer x",
	"Bearer=x",
	"Bearer " + acmeTok,
	"Bearer " + policeTok,
	"Bearer " + globexTok,
}

func FuzzBearerToken(f *testing.F) {
	for _, h := range hostileHeaders {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := BearerToken(h)
		if !ok {
			if tok != "" {
				t.Fatalf("BearerToken(%q) refused but returned %q", h, tok)
			}
			return
		}
		if tok == "" {
			t.Fatalf("BearerToken(%q) accepted an empty token", h)
		}
		if strings.IndexFunc(tok, badTokenRune) >= 0 {
			t.Fatalf("BearerToken(%q) accepted %q, which holds whitespace or a control character", h, tok)
		}
		if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") || !strings.HasSuffix(h, tok) {
			t.Fatalf("BearerToken(%q) = %q is not the Bearer credentials of the header", h, tok)
		}
		if strings.Trim(h[7:len(h)-len(tok)], " ") != "" {
			t.Fatalf("BearerToken(%q) = %q skipped more than spaces", h, tok)
		}
	})
}

// fuzzAuth is an Auth over the test principals and the cookies it issued.
func fuzzAuth(f *testing.F) (*Auth, map[string]string, map[string]string) {
	// No failure limit: the fuzzer fails from one address all the time.
	a, err := New(Config{Principals: testPrincipals(), FailureRate: math.Inf(1)}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	tokens := map[string]string{} // token -> principal
	for _, pc := range testPrincipals() {
		switch pc.Name {
		case "mod":
			tokens[modTok] = pc.Name
		case "acme":
			tokens[acmeTok] = pc.Name
		case "globex":
			tokens[globexTok] = pc.Name
		case "police":
			tokens[policeTok] = pc.Name
		}
	}
	// The cookies are the same in every fuzzing process: a fixed expiry
	// and an id derived from the name.
	cookies := map[string]string{} // valid cookie -> principal
	expires := time.Now().AddDate(50, 0, 0).Truncate(24 * time.Hour)
	for name, p := range a.byName {
		h := sha256.Sum256([]byte(name))
		cookies[a.mintSession(p, expires, [16]byte(h[:16]))] = name
	}
	return a, tokens, cookies
}

// FuzzAuthenticate: whatever the header, query and cookie, Authenticate
// never panics, and it finds a principal only for a real token or a cookie
// that was issued, in the order header, query, cookie.
func FuzzAuthenticate(f *testing.F) {
	a, tokens, cookies := fuzzAuth(f)
	var valid []string
	for c := range cookies {
		valid = append(valid, c)
	}
	seeds := []struct{ header, query, cookie string }{
		{"", "", ""},
		{"Bearer " + modTok, "", ""},
		{"", "access_token=" + url.QueryEscape(acmeTok), ""},
		{"", "channel=reports&access_token=" + acmeTok + "&access_token=x", ""},
		{"", "access_token=x&access_token=" + acmeTok, ""},
		{"", "access_token=%zz" + acmeTok, ""},
		{"", "access_token=" + acmeTok + "%00", ""},
		{"", "access_token", ""},
		{"", ";access_token=" + acmeTok, ""},
		{"", "", SessionCookie + "=" + valid[0]},
		{"", "", SessionCookie + `="` + valid[1] + `"`},
		{"", "", "other=1; " + SessionCookie + "=" + valid[2]},
		{"", "", SessionCookie + "=x; " + SessionCookie + "=" + valid[3]},
		{"", "", SessionCookie + "=" + flipLast(valid[0])},
		{"", "", SessionCookie + "=" + valid[0] + "="},
		{"", "", SessionCookie + "=..."},
		{"", "", SessionCookie + "=bW9k.99999999999999999999.AAAA"},
		{"Bearer x", "access_token=" + acmeTok, SessionCookie + "=" + valid[0]},
		{"Basic " + modTok, "", SessionCookie + "=" + valid[0]},
	}
	for _, h := range hostileHeaders {
		seeds = append(seeds, struct{ header, query, cookie string }{h, "", ""})
	}
	for _, s := range seeds {
		f.Add(s.header, s.query, s.cookie)
	}
	f.Fuzz(func(t *testing.T, header, rawQuery, cookie string) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, URL: &url.URL{Path: "/v1/sse", RawQuery: rawQuery}}
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		p, err := a.Authenticate(r)
		if (p == nil) == (err == nil) {
			t.Fatalf("Authenticate = %v, %v: want exactly one", p, err)
		}

		// The oracle: what the contract says this request is.
		want := ""
		switch {
		case header != "":
			if tok, ok := BearerToken(header); ok {
				want = tokens[tok]
			}
		case r.URL.Query().Has("access_token"):
			want = tokens[r.URL.Query().Get("access_token")]
		default:
			if c, err := r.Cookie(SessionCookie); err == nil {
				want = cookies[c.Value]
			}
		}
		got := ""
		if p != nil {
			got = p.Name
		}
		if got != want {
			t.Fatalf("Authorization %q, query %q, cookie %q: authenticated as %q, want %q", header, rawQuery, cookie, got, want)
		}
		if err != nil {
			for tok := range tokens {
				if strings.Contains(err.Error(), tok) {
					t.Fatalf("error %q holds a token", err)
				}
			}
		}
	})
}

// FuzzSessionCookie: no cookie value authenticates unless it is one that was
// issued; a value is never rescued by a lax decoding.
func FuzzSessionCookie(f *testing.F) {
	a, _, cookies := fuzzAuth(f)
	for c := range cookies {
		f.Add(c)
		f.Add(flipLast(c))
		f.Add(moveExpiry(c))
		f.Add(c + ".")
		f.Add(strings.Replace(c, ".", "..", 1))
		p := strings.Split(c, ".")
		rest := "." + p[2] + "." + p[3]
		f.Add(p[0] + ".+" + p[1] + rest)                                           // the same expiry, spelled differently
		f.Add(p[0] + ".0" + p[1] + rest)                                           // and again
		f.Add(p[0] + "=." + p[1] + rest)                                           // padded name
		f.Add(p[0] + "." + p[1] + "." + p[2] + "=." + p[3])                        // padded id
		f.Add(c + "=")                                                             // padded MAC
		f.Add(p[0] + "." + p[1] + "." + p[2] + "." + p[3][:4] + "\r\n" + p[3][4:]) // line breaks a base64 decoder skips
		f.Add(p[0][:2] + "\n" + p[0][2:] + "." + p[1] + rest)
		f.Add(p[0] + "." + p[1] + "." + p[3]) // the earlier form, without an id
	}
	for _, s := range []string{
		"", ".", "..", "...", "a.b.c", "bW9k..", "bW9k.1.",
		"bW9k.99999999999999999999.AAAA",
		"bW9k.-1.AAAA",
		"bW9k.9223372036854775807." + strings.Repeat("A", 43),
		"bW9k.9223372036854775807." + strings.Repeat("A", 22) + "." + strings.Repeat("A", 43),
		strings.Repeat("A", 2000),
		"\x00.\x00.\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, ok := a.parseSession(v, time.Now())
		p := s.p
		if !ok {
			p = nil
		}
		want, issued := cookies[v]
		switch {
		case p == nil && issued:
			t.Fatalf("an issued cookie %q for %s is refused", v, want)
		case p != nil && !issued:
			t.Fatalf("cookie %q, never issued, authenticates as %s", v, p.Name)
		case p != nil && p.Name != want:
			t.Fatalf("cookie %q authenticates as %s, issued to %s", v, p.Name, want)
		}
	})
}
