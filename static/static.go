// Package static holds the moderator page and the JavaScript SDK, embedded
// into the binary.
package static

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"time"
)

//go:embed files
var files embed.FS

// Handler serves the moderator page and its assets.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "files")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fsrv.ServeHTTP(w, r)
	})
}

// SDK is the JavaScript SDK (an ES module); its tests stay out of the
// binary.
//
//go:embed sdk/switchboard.js
var SDK []byte

// sdkETag names the SDK's content: a new build with a changed SDK has
// another.
var sdkETag = func() string {
	sum := sha256.Sum256(SDK)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}()

// SDKHandler serves the JavaScript SDK at GET /v1/sdk/switchboard.js: public
// code, no credential, readable from any origin (a module script is fetched
// with CORS). Caches keep it five minutes, then revalidate with its ETag.
func SDKHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("ETag", sdkETag)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "switchboard.js", time.Time{}, bytes.NewReader(SDK))
	})
}
