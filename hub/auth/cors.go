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
// Origin (not from a browser), passes. An allowed cross-origin request gets
// the CORS headers, with credentials; a preflight is answered here. Any other
// cross-origin request is refused with 403 before it reaches the handler.
func CORS(allowed []string, next http.Handler) http.Handler {
	set := map[string]bool{}
	anyOrigin := false
	for _, o := range allowed {
		if o == "*" {
			anyOrigin = true
		}
		set[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || sameOrigin(origin, r) {
			next.ServeHTTP(w, r)
			return
		}
		if !anyOrigin && !set[strings.ToLower(origin)] {
			hub.WriteRefusal(w, fmt.Errorf("%w: origin %s is not in http.allowed_origins", hub.ErrForbidden, clip(origin)))
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Set("Access-Control-Expose-Headers", "Location, Retry-After, Preference-Applied")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Prefer, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether origin names the host r was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
