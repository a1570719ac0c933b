package main

import (
	"context"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// asCommand, set in a child's environment, makes the test binary run the
// command line of its arguments instead of the tests: the way a test sees
// what the real binary writes to its own stderr.
const asCommand = "SB_TEST_AS_COMMAND" // not SWITCHBOARD_*: the start refuses unknown ones

func TestMain(m *testing.M) {
	if os.Getenv(asCommand) == "1" {
		os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
