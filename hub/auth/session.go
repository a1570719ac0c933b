package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// SessionCookie is the name of the browser page's session cookie.
const SessionCookie = "switchboard_session"

// The session cookie is "<name>.<expiry unix>.<id>.<mac>", all base64url,
// where id is 16 random bytes naming this session (for sign-out) and mac is
// an HMAC-SHA256 of the rest, keyed by auth.session_secret and the
// principal's token hash. Every node with the same configuration accepts
// it; changing a principal's token ends its sessions, changing the secret
// ends everyone's, and DELETE /v1/session ends one, on every node sharing
// the revocation list. A cookie of the earlier form without an id
// ("<name>.<expiry>.<mac>") is refused: it could not be signed out.
func (a *Auth) newSession(p *Principal, now time.Time) string {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return a.mintSession(p, now.Add(a.cfg.SessionTTL), id)
}

// mintSession makes the cookie of session id of p, ending at expires.
func (a *Auth) mintSession(p *Principal, expires time.Time, id [16]byte) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	name := base64.RawURLEncoding.EncodeToString([]byte(p.Name))
	sid := base64.RawURLEncoding.EncodeToString(id[:])
	return name + "." + exp + "." + sid + "." + base64.RawURLEncoding.EncodeToString(a.sessionMAC(p, name, exp, sid))
}

func (a *Auth) sessionMAC(p *Principal, name, exp, id string) []byte {
	key := sha256.Sum256([]byte("switchboard-session-v2:" + a.cfg.SessionSecret + ":" + string(p.hash[:])))
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(name + "." + exp + "." + id))
	return m.Sum(nil)
}

// session is a valid session cookie's content.
type session struct {
	p       *Principal
	expires time.Time
	id      string
}

// parseSession checks a session cookie's form, MAC and expiry at now; it
// does not ask whether the session was signed out.
func (a *Auth) parseSession(v string, now time.Time) (session, bool) {
	if len(v) > 1024 || strings.IndexFunc(v, notCookieRune) >= 0 {
		return session{}, false
	}
	parts := strings.Split(v, ".")
	if len(parts) != 4 {
		return session{}, false
	}
	// Strict decoding: one cookie has one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return session{}, false
	}
	p := a.byName[string(raw)]
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if p == nil || err != nil || now.Unix() > exp || strconv.FormatInt(exp, 10) != parts[1] {
		return session{}, false
	}
	if id, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil || len(id) != 16 {
		return session{}, false
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(parts[3])
	if err != nil || !hmac.Equal(mac, a.sessionMAC(p, parts[0], parts[1], parts[2])) {
		return session{}, false
	}
	return session{p: p, expires: time.Unix(exp, 0), id: parts[2]}, true
}

// notCookieRune reports a rune that no cookie newSession makes holds: it
// makes only base64url and dots. (The base64 decoder alone would skip CR and
// LF, giving one cookie many spellings.)
func notCookieRune(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}

// SessionHandler serves /v1/session for the browser page:
//
//   - POST with the token (Authorization: Bearer, a JSON {"token": ...} or a
//     form field "token") sets the session cookie (HttpOnly,
//     SameSite=Strict, Secure over TLS) and answers who signed in;
//   - GET answers who the cookie (or token) belongs to, or 401;
//   - DELETE signs the cookie's session out on every node sharing the
//     revocation list (503, cookie kept, when the list does not answer),
//     and clears the cookie.
func (a *Auth) SessionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			a.signIn(w, r)
		case http.MethodGet:
			p, err := a.Authenticate(r)
			if err != nil {
				writeAuthError(w, err)
				return
			}
			writeWho(w, p)
		case http.MethodDelete:
			a.signOut(w, r)
		default:
			w.Header().Set("Allow", "GET, POST, DELETE")
			hub.Error(w, http.StatusMethodNotAllowed, "use POST to sign in, DELETE to sign out")
		}
	})
}

// signOut revokes the session of r's cookie until it would have expired,
// and clears the cookie. Without a valid cookie it only clears it.
func (a *Auth) signOut(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		if s, ok := a.parseSession(c.Value, time.Now()); ok {
			if err := a.cfg.Revocations.Revoke(r.Context(), s.id, s.expires); err != nil {
				hub.LoggerFrom(r.Context(), a.log).Error("sign-out failed: the session could not be revoked", "principal", s.p.Name, "err", err)
				w.Header().Set("Retry-After", "2")
				hub.WriteProblem(w, hub.Problem{Type: hub.ProblemUnavailable,
					Detail: "the session could not be signed out on every node: retry"})
				return
			}
			hub.LoggerFrom(r.Context(), a.log).Info("signed out", "principal", s.p.Name, "role", s.p.Role)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// signIn checks a token sent to POST /v1/session and sets the cookie. It
// counts a wrong token against the source, like Authenticate.
func (a *Auth) signIn(w http.ResponseWriter, r *http.Request) {
	src := a.source(r)
	if err := a.throttle(r, src); err != nil {
		writeAuthError(w, err)
		return
	}
	var tok string
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := BearerToken(h)
		if !ok {
			err := fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", hub.ErrUnauthenticated)
			a.fail(r.Context(), r, src, CredentialSignIn, err)
			hub.WriteRefusal(w, err)
			return
		}
		tok = t
	} else {
		r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		switch mt {
		case "application/json":
			var body struct {
				Token string `json:"token"`
			}
			b, err := io.ReadAll(r.Body)
			if err != nil {
				bodyError(w, err, `send {"token": "..."}`)
				return
			}
			if err := hub.DecodeStrict(b, &body); err != nil {
				bodyError(w, err, err.Error()+`: send {"token": "..."}`)
				return
			}
			tok = body.Token
		case "application/x-www-form-urlencoded":
			if err := r.ParseForm(); err != nil {
				bodyError(w, err, "bad form")
				return
			}
			tok = r.PostForm.Get("token")
		default:
			hub.Error(w, http.StatusUnsupportedMediaType, "send the token as JSON, a form, or an Authorization header")
			return
		}
	}
	p := a.byToken(tok)
	if p == nil {
		err := fmt.Errorf("%w: unknown token", hub.ErrUnauthenticated)
		a.fail(r.Context(), r, src, CredentialSignIn, err)
		hub.WriteRefusal(w, err)
		return
	}
	hub.Authenticated(r.Context())
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: a.newSession(p, time.Now()), Path: "/",
		MaxAge: int(a.cfg.SessionTTL.Seconds()), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	hub.LoggerFrom(r.Context(), a.log).Info("signed in", "principal", p.Name, "role", p.Role)
	writeWho(w, p)
}

// bodyError answers a sign-in body that could not be read: 413 when it is
// over the limit, 400 otherwise.
func bodyError(w http.ResponseWriter, err error, detail string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		hub.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooBig.Limit))
		return
	}
	hub.Error(w, http.StatusBadRequest, detail)
}

func writeWho(w http.ResponseWriter, p *Principal) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]string{"name": p.Name, "role": string(p.Role)})
}
