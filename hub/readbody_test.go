package hub

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestHTTPGuardReadBody: a body the guard read whole is handed to a
// handler as it is by ReadBody, once, while none of it was read; a
// chunked body of unknown length is read whole too; a body read in part
// is read as usual.
func TestHTTPGuardReadBody(t *testing.T) {
	type seen struct {
		taken   string
		ok      bool
		rest    string
		partial bool
	}
	got := make(chan seen, 1)
	srv, _ := guardServer(t, HTTPGuardConfig{MaxBodyBytes: 64}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		b, ok := ReadBody(r)
		s.taken, s.ok = string(b), ok
		one := make([]byte, 1)
		if _, err := r.Body.Read(one); err == nil {
			_, s.partial = ReadBody(r)
			rest, _ := io.ReadAll(r.Body)
			s.rest = string(one) + string(rest)
		}
		got <- s
	}))
	for _, chunked := range []bool{false, true} {
		body := strings.NewReader(`{"item_id":"item-1"}`)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
		if chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(body) // no length known: sent chunked
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := <-got
		if !s.ok || s.taken != `{"item_id":"item-1"}` || s.partial || s.rest != s.taken {
			t.Fatalf("chunked %v: %+v", chunked, s)
		}
	}
}

// TestReadAtMost: the guard's read of a body stops at its limit, with or
// without a known size, and a size that lies is not trusted.
func TestReadAtMost(t *testing.T) {
	for _, c := range []struct {
		body        string
		size, limit int64
		want        string
	}{
		{"hello", 5, 10, "hello"},
		{"hello", -1, 10, "hello"},
		{"hello", 2, 10, "hello"},
		{"hello world", 11, 6, "hello "},
		{"hello world", -1, 6, "hello "},
		{strings.Repeat("x", 2000), -1, 1500, strings.Repeat("x", 1500)},
		{"", 0, 10, ""},
	} {
		b, err := readAtMost(strings.NewReader(c.body), c.size, c.limit)
		if err != nil || string(b) != c.want {
			t.Errorf("%q size %d limit %d: %q %v", c.body, c.size, c.limit, b, err)
		}
	}
}
