package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/auth"
)

// TestDashboardJWTSignIn: in Chromium, the moderator page signs in with a
// JWT in its address (the page posts it to /v1/session as a JSON body,
// the door TestJWTDoors does not use), under the JWT's name; the session
// cookie the browser keeps ends no later than the JWT; and at the JWT's
// exp the page's stream ends and the page asks to sign in again, as the
// node now refuses the session.
func TestDashboardJWTSignIn(t *testing.T) {
	chrome := chromiumPath(t)
	secret := strings.Repeat("y", 32)
	a := startTestApp(t, func(c *config.Config) {
		c.Auth.JWT.HMACSecret = secret
		c.Auth.JWT.Issuer, c.Auth.JWT.Audience = "idp", "switchboard"
		c.Auth.JWT.Leeway = 0
	})
	waitReady(t, a)
	// Long enough for a loaded machine to load the page and sign in
	// before it ends; the test waits for conditions, never for a time.
	exp := time.Unix(time.Now().Add(30*time.Second).Unix(), 0)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "jane", "role": "moderator",
		"iss": "idp", "aud": "switchboard", "exp": exp.Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}

	ctx := newBrowser(t, chrome)
	pageDo(t, ctx, chromedp.Navigate(a.base()+"/?access_token="+tok))
	waitPage(t, ctx, "the page signed in with the JWT and live",
		`document.body.dataset.signedIn === "jane" && document.getElementById("conn").dataset.state === "live"`)
	if href := pageEval[string](t, ctx, `location.href`); strings.Contains(href, tok) {
		t.Fatalf("the JWT is still in the address: %s", href)
	}

	var cookies []*network.Cookie
	pageDo(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{a.base() + "/"}})
		cookies = res.Cookies
		return err
	}))
	var session *network.Cookie
	for _, c := range cookies {
		if c.Name == auth.SessionCookie {
			session = c
		}
	}
	if session == nil {
		t.Fatalf("the browser keeps no %s cookie: %v", auth.SessionCookie, cookies)
	}
	// Max-Age is whole seconds; the browser adds it to its own clock.
	if session.Session || session.Expires > float64(exp.Unix()+1) || !session.HTTPOnly {
		t.Errorf("session cookie: session %v, expires %v, HttpOnly %v; want it HttpOnly and ending by the JWT's exp %d",
			session.Session, session.Expires, session.HTTPOnly, exp.Unix())
	}

	// At exp the stream ends; the page finds its session refused and asks
	// to sign in again.
	waitPage(t, ctx, "the page signed out at the JWT's exp",
		`document.body.dataset.signedIn === undefined && document.getElementById("signin-error").textContent.includes("session has ended")`)
	if !time.Now().After(exp) {
		t.Errorf("the page signed out at %v, before the JWT's exp %v", time.Now(), exp)
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/v1/session").then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || st != 401 {
		t.Fatalf("after exp GET /v1/session: %d %v, want 401", st, err)
	}
}
