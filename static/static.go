// Package static holds the moderator page, embedded into the binary.
package static

import (
	"embed"
	"io/fs"
	"net/http"
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
