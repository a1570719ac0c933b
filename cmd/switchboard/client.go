package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// The client commands (tail, call) talk to a running node: they share how
// they find it and the token.

// Environment variables of the client commands; config.ClientEnv lists
// them so that a node started in the same environment does not refuse them.
const (
	envURL   = "SWITCHBOARD_URL"
	envToken = "SWITCHBOARD_TOKEN"
)

// exitError ends a command with an exit status other than 1, once the
// command has said what happened.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// clientFlags are the flags that say where a node is and who asks.
type clientFlags struct {
	url, token, tokenFile string
}

const clientHelp = `
The node is --url (default: $SWITCHBOARD_URL, else http://localhost:8080).
The bearer token is --token, else read from --token-file (read again on
every reconnection, so a rotated file is picked up), else
$SWITCHBOARD_TOKEN. A node started in the same environment ignores both
variables.`

func (f *clientFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, "url", "", "the node's base URL (default $"+envURL+", else http://localhost:8080)")
	fl.StringVar(&f.token, "token", "", "bearer token (default $"+envToken+")")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token, read on every (re)connection")
}

// baseURL is the node's URL.
func (f *clientFlags) baseURL() string {
	switch {
	case f.url != "":
		return strings.TrimSuffix(f.url, "/")
	case os.Getenv(envURL) != "":
		return strings.TrimSuffix(os.Getenv(envURL), "/")
	}
	return "http://localhost:8080"
}

// readToken returns the token as the flags and the environment say.
func (f *clientFlags) readToken() (string, error) {
	switch {
	case f.token != "":
		return f.token, nil
	case f.tokenFile != "":
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file %s is empty", f.tokenFile)
		}
		return tok, nil
	case os.Getenv(envToken) != "":
		return os.Getenv(envToken), nil
	}
	return "", errors.New("no token: give --token, --token-file or $" + envToken)
}
