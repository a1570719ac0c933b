package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/switchboard/switchboard/cmd/switchboard/internal/node"
	"github.com/switchboard/switchboard/config"
)

func newVersionCmd(info node.BuildInfo) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this binary",
		Long: `version prints the main module's version, the VCS revision it was built
from and whether the working tree was modified, and the Go version; "unknown"
for what the binary does not carry (a go run or go test build). The same is
in the switchboard_build_info metric.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), info.String())
			return err
		},
	}
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a configuration, or print one with every default",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigCheckCmd(), newConfigDefaultsCmd())
	return cmd
}

func newConfigCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [flags]",
		Short: "Validate the configuration as a start would, without starting",
		Long: `check reads the configuration exactly as "switchboard" would start with it
(the file, the environment and the flags) and validates it. It prints "ok"
and exits 0, or prints each problem, naming its key or environment variable,
on stderr and exits 1. It opens no connection: a broker or Redis that does
not answer is found at start only.
` + configHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			if _, err := config.Load(path, cmd.Flags()); err != nil {
				for _, p := range problems(err) {
					fmt.Fprintln(cmd.ErrOrStderr(), p)
				}
				return errReported
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return err
		},
	}
	config.BindFlags(cmd.Flags())
	return cmd
}

// problems flattens the errors Load joined into one message each.
func problems(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, problems(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

func newConfigDefaultsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "defaults",
		Short: "Print a YAML configuration with every key, its default and a comment",
		Long: `defaults prints a YAML configuration file that sets every key to its default,
each under a one-line comment. "switchboard config check --config FILE"
accepts it unchanged; edit what you need. Secrets (auth.session_secret,
kafka.sasl.password) are empty: set them in the environment.
itemsvc.enabled is commented out: unset, it follows kafka.brokers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return config.WriteDefaults(cmd.OutOrStdout())
		},
	}
}
