// Package docs carries the machine-readable API documents, so the binary
// serves the ones it was built with.
package docs

import _ "embed"

// OpenAPI is the OpenAPI 3.1 document of the HTTP API (openapi.yaml).
//
//go:embed openapi.yaml
var OpenAPI []byte
