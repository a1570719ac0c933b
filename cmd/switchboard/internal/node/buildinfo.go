package node

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// unknown stands for a build fact the binary does not carry, such as the
// VCS revision of a `go test` or `go run` build outside a repository.
const unknown = "unknown"

// BuildInfo is what the binary knows of its own build: what `switchboard
// version` prints and the switchboard_build_info metric carries.
type BuildInfo struct {
	// Version is the main module's version: a tag, a pseudo-version
	// (with "+dirty" when modified), or "(devel)".
	Version string
	// Revision is the VCS commit it was built from.
	Revision string
	// Modified is "true" when the working tree had changes, "false" when
	// it had none.
	Modified  string
	GoVersion string
}

// ReadBuildInfo reads the running binary's build information.
func ReadBuildInfo() BuildInfo {
	return buildInfoFrom(debug.ReadBuildInfo())
}

func buildInfoFrom(bi *debug.BuildInfo, ok bool) BuildInfo {
	b := BuildInfo{Version: unknown, Revision: unknown, Modified: unknown, GoVersion: runtime.Version()}
	if !ok || bi == nil {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		b.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			b.Modified = s.Value
		}
	}
	return b
}

// String is what `switchboard version` prints, one "name: value" a line.
func (b BuildInfo) String() string {
	return fmt.Sprintf("version:  %s\nrevision: %s\nmodified: %s\ngo:       %s\n", b.Version, b.Revision, b.Modified, b.GoVersion)
}

// collector is the switchboard_build_info gauge: always 1, the build in its
// labels, so a dashboard can tell which nodes run which build.
func (b BuildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "switchboard_build_info",
		Help:        "Always 1; the labels say which build runs (version, VCS revision, Go version).",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "go_version": b.GoVersion},
	})
	g.Set(1)
	return g
}
