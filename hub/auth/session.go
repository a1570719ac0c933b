package auth

import (
	"crypto/hmac"
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

// The session cookie is "<name>.<expiry unix>.<mac>", all base64url, where
// mac is an HMAC-SHA256 keyed by auth.session_secret and the principal's
// token hash. It needs no server-side state, so every node with the same
// configuration accepts it; changing a principal's token ends its sessions,
// changing the secret ends everyone's.
func (a *Auth) newSession(p *Principal, now time.Time) string {
	exp := strconv.FormatInt(now.Add(a.cfg.SessionTTL).Unix(), 10)
	name := base64.RawURLEncoding.EncodeToString([]byte(p.Name))
	return name + "." + exp + "." + base64.RawURLEncoding.EncodeToString(a.sessionMAC(p, name, exp))
}

func (a *Auth) sessionMAC(p *Principal, name, exp string) []byte {
	key := sha256.Sum256([]byte("switchboard-session-v1:" + a.cfg.SessionSecret + ":" + string(p.hash[:])))
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(name + "." + exp))
	return m.Sum(nil)
}

// session returns the principal of a valid, unexpired session cookie.
func (a *Auth) session(v string) *Principal {
	if len(v) > 1024 || strings.IndexFunc(v, notCookieRune) >= 0 {
		return nil
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return nil
	}
	// Strict decoding: one cookie has one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return nil
	}
	p := a.byName[string(raw)]
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if p == nil || err != nil || time.Now().Unix() > exp {
		return nil
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil || !hmac.Equal(mac, a.sessionMAC(p, parts[0], parts[1])) {
		return nil
	}
	return p
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
//   - DELETE clears the cookie.
func (a *Auth) SessionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			a.signIn(w, r)
		case http.MethodGet:
			p, err := a.Authenticate(r)
			if err != nil {
				hub.WriteRefusal(w, err)
				return
			}
			writeWho(w, p)
		case http.MethodDelete:
			http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "GET, POST, DELETE")
			hub.Error(w, http.StatusMethodNotAllowed, "use POST to sign in, DELETE to sign out")
		}
	})
}

func (a *Auth) signIn(w http.ResponseWriter, r *http.Request) {
	var tok string
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := BearerToken(h)
		if !ok {
			hub.WriteRefusal(w, fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", hub.ErrUnauthenticated))
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
			if err == nil {
				err = json.Unmarshal(b, &body)
			}
			if err != nil {
				bodyError(w, err, `send {"token": "..."}`)
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
		hub.WriteRefusal(w, fmt.Errorf("%w: unknown token", hub.ErrUnauthenticated))
		return
	}
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
