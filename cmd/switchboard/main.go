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
	cmd.AddCommand(newItemSvcCmd())
	return cmd
}

func newItemSvcCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "itemsvc",
		Short: "Run only the simulated item service against a Kafka cluster",
		Long: `itemsvc consumes takedown.requested commands and answers them like the
platform's item service would: one item.removed per container the item was
posted to, then takedown.confirmed; takedown.rejected (not_found) for an
unknown item. It needs kafka.brokers (--kafka-brokers).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(path, cmd.Flags())
			if err != nil {
				return err
			}
			return runItemSvc(cmd.Context(), cfg)
		},
	}
	config.BindFlags(cmd.Flags())
	return cmd
}
