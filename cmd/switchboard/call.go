package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// Exit statuses of switchboard call.
const (
	exitCallOK       = 0 // 2xx: the command's outcome (or 202 accepted)
	exitCallOther    = 1 // any other status, a network failure, bad arguments
	exitCallNotFound = 3 // 404: e.g. a takedown of an unknown item
	exitCallRejected = 4 // 422: rejected for another reason
	exitCallTimeout  = 5 // 504: no outcome in time (the command goes on)
)

// maxCallAnswer bounds the answer call reads.
const maxCallAnswer = 4 << 20

// commandName is the grammar of a declared command's name in a path.
var commandName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func newCallCmd() *cobra.Command {
	var (
		cf      clientFlags
		key     string
		wait    time.Duration
		retries int
	)
	cmd := &cobra.Command{
		Use:   "call --url U --token T <command> key=value [key:=json ...]",
		Short: "Run one synchronous command (POST /v1/<command>) and print the answer",
		Long: `call runs one declared command, such as takedowns, over plain HTTP: it POSTs
the JSON object made of the key=value arguments to /v1/<command> and prints
the node's answer (JSON, or problem+json) on stdout. key=value sets a string;
key:=value sets a JSON value (a number, true, an object):

  switchboard call takedowns item_id=item-7 reason="court order" authority_ref=NL-1

The request carries an Idempotency-Key (--idempotency-key, or a random one),
so the retries after a network failure, 502 or 503 (--retries, honouring
Retry-After) never start a second command. --wait sets Prefer: wait=<seconds>.

Exit status by outcome:
  0  2xx: the outcome (200), or accepted (202)
  3  404: not found (a takedown of an unknown item)
  4  422: rejected for another reason (or an idempotency key reused with
     another body)
  5  504: no outcome in time; the command goes on, the answer's status_url
     tells it later
  1  anything else: 400, 401, 403, 429, 503 after the retries, a network
     failure, bad arguments
` + clientHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !commandName.MatchString(args[0]) {
				return fmt.Errorf("call: %q is not a command name", args[0])
			}
			body, err := callBody(args[1:])
			if err != nil {
				return fmt.Errorf("call: %w", err)
			}
			tok, err := cf.readToken()
			if err != nil {
				return fmt.Errorf("call: %w", err)
			}
			if key == "" {
				key = uuid.NewString()
			}
			return runCall(cmd.Context(), cf.baseURL()+"/v1/"+url.PathEscape(args[0]), tok, key, wait, retries, body, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringVar(&key, "idempotency-key", "", "the request's Idempotency-Key (default: a random one)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "how long the node may hold the request for the outcome (Prefer: wait); 0: the node's default")
	cmd.Flags().IntVar(&retries, "retries", 3, "retries after a network failure, 502 or 503, with the same Idempotency-Key")
	return cmd
}

// callBody is the JSON object of key=value and key:=json arguments.
func callBody(args []string) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" || k == ":" {
			return nil, fmt.Errorf("argument %q is not key=value or key:=json", a)
		}
		var raw json.RawMessage
		if jk, isJSON := strings.CutSuffix(k, ":"); isJSON {
			if !json.Valid([]byte(v)) {
				return nil, fmt.Errorf("argument %q: %s is not JSON", a, v)
			}
			k, raw = jk, json.RawMessage(v)
		} else {
			raw, _ = json.Marshal(v)
		}
		if _, dup := obj[k]; dup {
			return nil, fmt.Errorf("key %q given twice", k)
		}
		obj[k] = raw
	}
	return json.Marshal(obj)
}

// runCall posts body and prints the answer; the error carries the exit
// status.
func runCall(ctx context.Context, u, tok, key string, wait time.Duration, retries int, body []byte, out, errOut io.Writer) error {
	for attempt := 0; ; attempt++ {
		resp, answer, err := postOnce(ctx, u, tok, key, wait, body)
		retry := err != nil || resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable
		if retry && attempt < retries && ctx.Err() == nil {
			d := backoff(attempt, resp)
			why := ""
			if err != nil {
				why = err.Error()
			} else {
				why = resp.Status
			}
			fmt.Fprintf(errOut, "switchboard call: %s; retrying in %v with Idempotency-Key %s\n", why, d.Round(time.Millisecond), key)
			select {
			case <-time.After(d):
				continue
			case <-ctx.Done():
			}
		}
		if err != nil {
			return fmt.Errorf("call: %w", err)
		}
		out.Write(answer)
		if len(answer) > 0 && answer[len(answer)-1] != '\n' {
			io.WriteString(out, "\n")
		}
		switch code := resp.StatusCode; {
		case code >= 200 && code < 300:
			return nil
		case code == http.StatusNotFound:
			return &exitError{exitCallNotFound}
		case code == http.StatusUnprocessableEntity:
			return &exitError{exitCallRejected}
		case code == http.StatusGatewayTimeout:
			return &exitError{exitCallTimeout}
		default:
			fmt.Fprintln(errOut, "switchboard call:", resp.Status)
			return &exitError{exitCallOther}
		}
	}
}

// postOnce sends the request once and reads the answer.
func postOnce(ctx context.Context, u, tok, key string, wait time.Duration, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", key)
	if wait > 0 {
		req.Header.Set("Prefer", "wait="+strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCallAnswer))
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

// backoff is the wait before retry attempt+1: the answer's Retry-After
// (at most 30 s), else full jitter over 250 ms·2^attempt, at most 8 s.
func backoff(attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, 30*time.Second)
		}
	}
	ceil := min(250*time.Millisecond<<min(attempt, 5), 8*time.Second)
	return rand.N(ceil) + time.Millisecond
}
