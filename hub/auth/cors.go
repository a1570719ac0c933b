package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/switchboard/switchboard/hub"
)

// CORS checks a request's Origin against allowed (exact origins such as
// "https://mod.example.com", or "*"). A same-origin request, or one with no
// Origin (not from a browser), passes. A cross-origin request from an
// origin listed exactly gets the CORS headers with credentials; from any
// other origin, when "*" is listed, it gets "Access-Control-Allow-Origin: *"
// without credentials, and its session cookie is dropped before the
// handler sees it (a WebSocket upgrade too: browsers send cookies on those
// whatever CORS says). The "null" origin (sandboxed frames, file: and data:
// pages, some redirects) is never allowed: anyone can make one. A preflight
// is answered here. Any other cross-origin request is refused with 403
// before it reaches the handler.
func CORS(allowed []string, next http.Handler) http.Handler {
	exact := map[string]bool{}
	anyOrigin := false
	for _, o := range allowed {
		if o == "*" {
			anyOrigin = true
			continue
		}
		exact[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if strings.EqualFold(origin, "null") {
			hub.WriteRefusal(w, fmt.Errorf("%w: the origin null is never allowed", hub.ErrForbidden))
			return
		}
		if sameOrigin(origin, r) {
			next.ServeHTTP(w, r)
			return
		}
		credentials := exact[strings.ToLower(origin)]
		if !credentials && !anyOrigin {
			hub.WriteRefusal(w, fmt.Errorf("%w: origin %s is not in http.allowed_origins", hub.ErrForbidden, hub.Clip(origin, 100)))
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		if credentials {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		} else {
			h.Set("Access-Control-Allow-Origin", "*")
			r = withoutSessionCookie(r)
		}
		h.Set("Access-Control-Expose-Headers", "Location, Retry-After, Preference-Applied")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Prefer, Last-Event-ID, traceparent, tracestate")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withoutSessionCookie returns r without its session cookie; other cookies
// stay.
func withoutSessionCookie(r *http.Request) *http.Request {
	if _, err := r.Cookie(SessionCookie); err != nil {
		return r
	}
	r = r.Clone(r.Context())
	cookies := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cookies {
		if c.Name != SessionCookie {
			r.AddCookie(c)
		}
	}
	return r
}

// sameOrigin reports whether origin names the host r was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}
