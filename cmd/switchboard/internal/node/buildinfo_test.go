package node

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestBuildInfoFrom: the module version, the VCS revision and modified
// flag, and the Go version come from the build information.
func TestBuildInfoFrom(t *testing.T) {
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want BuildInfo
	}{
		{"none", nil, BuildInfo{Version: "unknown", Revision: "unknown", Modified: "unknown", GoVersion: runtime.Version()}},
		{"go test", &debug.BuildInfo{GoVersion: "go1.99.1"}, BuildInfo{Version: "unknown", Revision: "unknown", Modified: "unknown", GoVersion: "go1.99.1"}},
		{"go build in a repository", &debug.BuildInfo{
			GoVersion: "go1.99.1",
			Main:      debug.Module{Path: "github.com/switchboard/switchboard", Version: "v1.2.3-0.20261201-abcdef+dirty"},
			Settings:  []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "abcdef0123"}, {Key: "vcs.modified", Value: "true"}},
		}, BuildInfo{Version: "v1.2.3-0.20261201-abcdef+dirty", Revision: "abcdef0123", Modified: "true", GoVersion: "go1.99.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildInfoFrom(tt.bi, tt.bi != nil); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
