// Command switchboard runs the Switchboard real-time hub. With no
// configuration it starts everything on one machine: an embedded
// Kafka-protocol broker, the in-memory backplane and the HTTP server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchboard/switchboard/cmd/switchboard/internal/node"
	"github.com/switchboard/switchboard/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errReported is returned by a command that has already said what went
// wrong; execute then only exits 1.
var errReported = errors.New("reported")

// execute runs the command line args and returns the exit status: 0, a
// command's own (switchboard call's by outcome), or 1 after saying why on
// stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		var le *node.LoggedError
		if errors.As(err, &le) {
			return 1 // the node's log said why, in its format
		}
		if !errors.Is(err, errReported) {
			fmt.Fprintln(stderr, "switchboard:", err)
		}
		return 1
	}
	return 0
}

// configHelp ends the help of every command that reads the configuration.
const configHelp = `
Configuration comes from, each overriding the one before: the defaults, a
YAML file (--config), SWITCHBOARD_* environment variables, and the flags.
A key's variable is SWITCHBOARD_ and the key in upper case with "." as "_":
hub.history.ttl is SWITCHBOARD_HUB_HISTORY_TTL. An unknown key, a bad value
or a SWITCHBOARD_* variable that is no key's stops the start with a message
that names it. Every key, its default and meaning: docs/configuration.md,
or "switchboard config defaults"; "switchboard config check" validates.`

func newRootCmd() *cobra.Command {
	info := node.ReadBuildInfo()
	cmd := &cobra.Command{
		Use:   "switchboard",
		Short: "Real-time hub: Kafka events to WebSocket and SSE subscribers",
		Long: `Switchboard consumes the platform's CloudEvents from Kafka and fans them out to
WebSocket and Server-Sent-Events subscribers. With no configuration it starts an
embedded Kafka-protocol broker and an in-memory backplane; --demo adds a
generator of item.reported events.
` + configHelp,
		Version:       info.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: withConfig(func(cmd *cobra.Command, cfg config.Config) error {
			return node.Run(cmd.Context(), cfg, cmd.OutOrStdout())
		}),
	}
	// --version prints what `switchboard version` does.
	cmd.Annotations = map[string]string{"buildinfo": info.String()}
	cmd.SetVersionTemplate(`{{index .Annotations "buildinfo"}}`)
	cmd.CompletionOptions.DisableDefaultCmd = true
	config.BindFlags(cmd.Flags())
	cmd.AddCommand(newItemSvcCmd(), newVersionCmd(info), newConfigCmd(), newTailCmd(), newCallCmd())
	return cmd
}

// itemSvcKeys are the keys whose flags itemsvc has: it uses no HTTP server,
// embedded broker, Redis or demo.
var itemSvcKeys = []string{"kafka.brokers", "log.level", "log.format"}

func newItemSvcCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "itemsvc",
		Short: "Run only the simulated item service against a Kafka cluster",
		Long: `itemsvc consumes takedown.requested commands and answers them like the
platform's item service would: one item.removed per container the item was
posted to, then takedown.confirmed; takedown.rejected (not_found) for an
unknown item. It needs kafka.brokers (--kafka-brokers). Of the configuration
it uses kafka.*, itemsvc.latency, commands and demo.enabled (to answer a
declared item.restore command too), otel.* and log.*.
` + configHelp,
		Args: cobra.NoArgs,
		RunE: withConfig(func(cmd *cobra.Command, cfg config.Config) error {
			return node.RunItemService(cmd.Context(), cfg)
		}),
	}
	config.BindFlags(cmd.Flags(), itemSvcKeys...)
	// itemsvc starts no embedded broker: without brokers it refuses to run.
	cmd.Flags().Lookup("kafka-brokers").Usage = "Kafka brokers to serve, comma-separated; required (kafka.brokers)"
	return cmd
}

// withConfig is a command's RunE that loads the configuration (--config,
// the environment, the flags) and runs with it.
func withConfig(run func(*cobra.Command, config.Config) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		path, _ := cmd.Flags().GetString("config")
		cfg, err := config.Load(path, cmd.Flags())
		if err != nil {
			return err
		}
		return run(cmd, cfg)
	}
}
