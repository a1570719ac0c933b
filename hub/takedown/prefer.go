package takedown

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Preferences are the RFC 7240 preferences the adapter honours.
type Preferences struct {
	// Wait is the client's "wait=N", zero when absent.
	Wait time.Duration
	// RespondAsync is "respond-async".
	RespondAsync bool
}

// ParsePrefer reads every Prefer header of h. Unknown preferences and bad
// values are ignored, as RFC 7240 asks.
func ParsePrefer(h http.Header) Preferences {
	var p Preferences
	for _, line := range h.Values("Prefer") {
		for _, pref := range strings.Split(line, ",") {
			pref, _, _ = strings.Cut(pref, ";") // parameters are not used
			name, value, _ := strings.Cut(strings.TrimSpace(pref), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			value = strings.Trim(strings.TrimSpace(value), `"`)
			switch name {
			case "respond-async":
				p.RespondAsync = true
			case "wait":
				if n, err := strconv.ParseUint(value, 10, 32); err == nil && p.Wait == 0 {
					p.Wait = time.Duration(n) * time.Second
				}
			}
		}
	}
	return p
}
