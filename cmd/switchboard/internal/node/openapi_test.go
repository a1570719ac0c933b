package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/switchboard/switchboard/docs"
)

// The end-to-end tests' HTTP responses are checked against the OpenAPI
// document: TestMain puts this transport under http.DefaultClient, and a
// response that does not match its operation fails the package.
type openAPIValidator struct {
	next   http.RoundTripper
	router routers.Router

	mu        sync.Mutex
	failures  []string
	validated atomic.Int64
}

func newOpenAPIValidator() (*openAPIValidator, error) {
	// The JavaScript SDK's body is text, checked as a string.
	openapi3filter.RegisterBodyDecoder("text/javascript", openapi3filter.FileBodyDecoder)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(docs.OpenAPI)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml is not valid: %w", err)
	}
	doc.Servers = nil // match on paths, whatever host the test uses
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &openAPIValidator{next: http.DefaultTransport, router: r}, nil
}

func (v *openAPIValidator) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	route, params, ferr := v.router.FindRoute(req)
	if ferr != nil {
		if os.Getenv("OPENAPI_DEBUG") != "" {
			fmt.Fprintln(os.Stderr, "unrouted", req.Method, req.URL.String(), ferr)
		}
		return resp, nil // not part of the documented API (e.g. /metrics)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	stream := resp.StatusCode == http.StatusSwitchingProtocols || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if stream {
		// A stream's body never ends: check status and headers only.
		in.Options.ExcludeResponseBody = true
		in.Body = io.NopCloser(bytes.NewReader(nil))
	} else {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if rerr != nil {
			return resp, nil
		}
		in.SetBodyBytes(body)
	}
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		v.mu.Lock()
		v.failures = append(v.failures, fmt.Sprintf("%s %s -> %d: %v", req.Method, req.URL.Path, resp.StatusCode, err))
		v.mu.Unlock()
	} else {
		v.validated.Add(1)
	}
	return resp, nil
}

// report prints what failed; it returns the exit code.
func (v *openAPIValidator) report() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.failures) > 0 {
		fmt.Fprintf(os.Stderr, "%d responses do not match docs/openapi.yaml:\n", len(v.failures))
		for _, f := range v.failures {
			fmt.Fprintln(os.Stderr, "  "+f)
		}
		return 1
	}
	return 0
}
