package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HarnessEnv are the SWITCHBOARD_* environment variables that Switchboard's
// own tests, benchmarks and CI scripts read. They are not configuration:
// Load neither reads nor refuses them. A name ending in "*" stands for every
// variable that starts with what precedes the "*".
//
//   - SWITCHBOARD_CI: set by .ci/run; a test that needs a missing tool
//     (Redis, kcat, Chromium) fails instead of skipping.
//   - SWITCHBOARD_ARTIFACTS, SWITCHBOARD_UPDATE_SCREENSHOT: where the
//     dashboard test saves its screenshots, and whether it refreshes
//     docs/dashboard.png.
//   - SWITCHBOARD_BENCH_*: profiles of the benchmarks.
//   - SWITCHBOARD_LOADCLIENT, SWITCHBOARD_LOADCLIENT_*, SWITCHBOARD_HOLDCLIENT,
//     SWITCHBOARD_TAKEDOWNCLIENT, SWITCHBOARD_CHILD_NODE,
//     SWITCHBOARD_TEST_HELPER_*: set by a test for the child process it
//     starts (load clients, nodes killed in the fault drills, helper
//     consumers).
var HarnessEnv = []string{
	"SWITCHBOARD_CI",
	"SWITCHBOARD_ARTIFACTS",
	"SWITCHBOARD_UPDATE_SCREENSHOT",
	"SWITCHBOARD_BENCH_*",
	"SWITCHBOARD_LOADCLIENT",
	"SWITCHBOARD_LOADCLIENT_*",
	"SWITCHBOARD_HOLDCLIENT",
	"SWITCHBOARD_TAKEDOWNCLIENT",
	"SWITCHBOARD_CHILD_NODE",
	"SWITCHBOARD_TEST_HELPER_*",
}

// ClientEnv are the SWITCHBOARD_* environment variables of the client
// commands ("switchboard tail" and "switchboard call"): the node's URL and
// the bearer token, so a token need not be on the command line. They are
// not configuration: Load neither reads nor refuses them.
var ClientEnv = []string{"SWITCHBOARD_URL", "SWITCHBOARD_TOKEN"}

// harnessVar reports whether name is one of HarnessEnv or ClientEnv.
func harnessVar(name string) bool {
	if slices.Contains(ClientEnv, name) {
		return true
	}
	for _, h := range HarnessEnv {
		if p, ok := strings.CutSuffix(h, "*"); ok && strings.HasPrefix(name, p) || name == h {
			return true
		}
	}
	return false
}

// unknownEnv refuses every environment variable that starts with
// SWITCHBOARD_ (in any case) and is neither the variable of a key, nor of a
// section (envSections deals with those), nor one of HarnessEnv. Without it
// a misspelt variable, such as SWITCHBOARD_HUB_HISTORY_SISE, is silently
// ignored and the default applies.
func unknownEnv(environ []string) error {
	known := map[string]string{} // variable -> key
	for _, k := range Keys() {
		known[envName(k)] = k
		parts := strings.Split(k, ".")
		for i := 1; i < len(parts); i++ {
			known[envName(strings.Join(parts[:i], "."))] = ""
		}
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(strings.ToUpper(name), EnvPrefix+"_") || harnessVar(name) {
			continue
		}
		if _, ok := known[name]; ok {
			continue
		}
		if k, ok := v1Env[name]; ok {
			e := v1Error(k)
			e.Err = fmt.Errorf("(%s) %w", name, e.Err)
			errs = append(errs, e)
			continue
		}
		errs = append(errs, &EnvError{Name: name, Key: likelyKey(name)})
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// v1Env maps the environment variable of each v1 key to the key.
var v1Env = func() map[string]string {
	m := make(map[string]string, len(v1Keys))
	for k := range v1Keys {
		m[envName(k)] = k
	}
	return m
}()

// likelyKey returns the key whose variable name is closest to name, when
// one is close enough to be a likely typo (a few letters off, the wrong
// case, or the section left out), or "".
func likelyKey(name string) string {
	upper := strings.ToUpper(name)
	rest := strings.TrimPrefix(upper, EnvPrefix+"_")
	best, bestD := "", max(2, len(rest)/5)+1
	var suffix []string
	for _, k := range Keys() {
		v := envName(k)
		if d := distance(upper, v); d < bestD {
			best, bestD = k, d
		}
		if strings.HasSuffix(v, "_"+rest) {
			suffix = append(suffix, k)
		}
	}
	if best == "" && len(suffix) == 1 {
		best = suffix[0]
	}
	return best
}

// distance is the Levenshtein distance of a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
