// Command switchboard runs the Switchboard real-time hub. With no
// configuration it starts everything on one machine: an embedded
// Kafka-protocol broker, the in-memory backplane and the HTTP server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchboard/switchboard/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "switchboard",
		Short: "Real-time hub: Kafka events to WebSocket and SSE subscribers",
		Long: `Switchboard consumes the platform's CloudEvents from Kafka and fans them out to
WebSocket and Server-Sent-Events subscribers. With no configuration it starts an
embedded Kafka-protocol broker and an in-memory backplane; --demo adds a
generator of item.reported events.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(path, cmd.Flags())
			if err != nil {
				return err
			}
			return run(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	config.BindFlags(cmd.Flags())
	return cmd
}
