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
//
// A principal from a JWT has no configured token: its cookie is
// "j.<principal>.<expiry>.<id>.<mac>", where principal is the JSON of its
// name, role and grants and mac is keyed by auth.session_secret alone, and
// it ends no later than the JWT.
func (a *Auth) newSession(p *Principal, now time.Time) string {
	v, _ := a.newSessionUntil(p, now, time.Time{})
	return v
}

// newSessionUntil makes a session cookie of p ending no later than until
// (unless zero), and tells when it ends.
func (a *Auth) newSessionUntil(p *Principal, now, until time.Time) (string, time.Time) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	expires := now.Add(a.cfg.SessionTTL)
	if !until.IsZero() && until.Before(expires) {
		expires = until
	}
	return a.mintSession(p, expires, id), expires
}

// mintSession makes the cookie of session id of p, ending at expires.
func (a *Auth) mintSession(p *Principal, expires time.Time, id [16]byte) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	var name string
	if p.jwt {
		b, _ := json.Marshal(jwtSession{Name: p.Name, Role: p.Role, Grants: p.Grants})
		name = "j." + base64.RawURLEncoding.EncodeToString(b)
	} else {
		name = base64.RawURLEncoding.EncodeToString([]byte(p.Name))
	}
	sid := base64.RawURLEncoding.EncodeToString(id[:])
	return name + "." + exp + "." + sid + "." + base64.RawURLEncoding.EncodeToString(a.sessionMAC(p, name, exp, sid))
}

// jwtSession is what a JWT principal's session cookie says of it.
type jwtSession struct {
	Name   string   `json:"n"`
	Role   Role     `json:"r"`
	Grants []string `json:"c,omitempty"`
}

func (a *Auth) sessionMAC(p *Principal, name, exp, id string) []byte {
	var key [sha256.Size]byte
	if p.jwt {
		key = sha256.Sum256(append([]byte("switchboard-session-jwt-v1:"), a.jwtSessionKey...))
	} else {
		key = sha256.Sum256([]byte("switchboard-session-v2:" + a.cfg.SessionSecret + ":" + string(p.hash[:])))
	}
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(name + "." + exp + "." + id))
	return m.Sum(nil)
}

// jwtSessionPrincipal decodes the principal part of a JWT principal's
// session cookie. The MAC is not checked yet.
func (a *Auth) jwtSessionPrincipal(part string) *Principal {
	if a.jwt == nil {
		return nil
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(part)
	if err != nil {
		return nil
	}
	var s jwtSession
	if err := hub.DecodeStrict(raw, &s); err != nil || s.Name == "" {
		return nil
	}
	switch s.Role {
	case RoleModerator, RolePartner, RolePolice:
	default:
		return nil
	}
	return &Principal{Name: s.Name, Role: s.Role, Grants: s.Grants, jwt: true}
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
	if len(v) > 4000 || strings.IndexFunc(v, notCookieRune) >= 0 {
		return session{}, false
	}
	parts := strings.Split(v, ".")
	var p *Principal
	switch {
	case len(parts) == 5 && parts[0] == "j":
		p = a.jwtSessionPrincipal(parts[1])
		parts = append([]string{"j." + parts[1]}, parts[2:]...)
	case len(parts) == 4 && len(v) <= 1024:
		// Strict decoding: one cookie has one spelling.
		raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
		if err != nil {
			return session{}, false
		}
		p = a.byName[string(raw)]
	default:
		return session{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if p == nil || err != nil || now.Unix() >= exp || strconv.FormatInt(exp, 10) != parts[1] {
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
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.secure(r)})
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
	p, until, err := a.token(r.Context(), tok, "token")
	if err != nil {
		a.fail(r.Context(), r, src, CredentialSignIn, err)
		hub.WriteRefusal(w, err)
		return
	}
	hub.Authenticated(r.Context())
	now := time.Now()
	v, expires := a.newSessionUntil(p, now, until)
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: v, Path: "/",
		MaxAge: max(int(expires.Sub(now).Seconds()), 1), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: a.secure(r),
	})
	hub.LoggerFrom(r.Context(), a.log).Info("signed in", "principal", p.Name, "role", p.Role)
	writeWho(w, p)
}

// secure reports whether r came over HTTPS, to this node or (Config.HTTPS)
// to a trusted proxy in front of it: its cookies are then Secure.
func (a *Auth) secure(r *http.Request) bool {
	if a.cfg.HTTPS != nil {
		return a.cfg.HTTPS(r)
	}
	return r.TLS != nil
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
