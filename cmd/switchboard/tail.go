package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/spf13/cobra"

	"github.com/switchboard/switchboard/hub/sdk"
)

// tailLine is one line tail prints: the WebSocket frame of the event or
// gap, so a line reads like the protocol's.
type tailLine struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Cursor  string          `json:"cursor,omitempty"`
	Event   json.RawMessage `json:"event,omitempty"`
}

func newTailCmd() *cobra.Command {
	var (
		cf       clientFlags
		channels []string
		from     string
		pack     bool
	)
	cmd := &cobra.Command{
		Use:   "tail --url U --token T --channel C [--channel C2 ...] [--from oldest]",
		Short: "Print a node's events of some channels as JSON lines, resuming on reconnect",
		Long: `tail subscribes to each --channel over the node's WebSocket (GET /v1/ws) and
prints every event as one line of JSON, the WebSocket frame that carried it:

  {"type":"event","channel":"reports","cursor":"…","event":{…CloudEvent…}}
  {"type":"gap","channel":"reports"}

A gap line says history could not cover a resume: events were missed.
Without --from it starts live; --from oldest starts from the oldest event
each channel's history holds. When the connection drops (the node restarts,
the network fails, close 1001/4000/1006) tail reconnects with backoff and
resumes every channel after the last event it printed: no event is printed
twice or skipped. It runs until interrupted (exit 0); a refused token
(close 1008) or a refused channel ends it with exit 1.
` + clientHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(channels) == 0 {
				return errors.New("tail: give at least one --channel")
			}
			if from != "" && from != "oldest" {
				return fmt.Errorf("tail: --from may only be oldest, not %q", from)
			}
			if _, err := cf.readToken(); err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			return tail(cmd.Context(), cf, channels, from == "oldest", pack, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringArrayVar(&channels, "channel", nil, "a channel to follow (repeatable)")
	cmd.Flags().StringVar(&from, "from", "", `"oldest": start from the oldest event history holds (default: live)`)
	cmd.Flags().BoolVar(&pack, "pack", false, "let the node pack frames into batch messages (?pack=1)")
	return cmd
}

// tail prints the events of channels on out until ctx ends.
func tail(ctx context.Context, cf clientFlags, channels []string, oldest, pack bool, out, errOut io.Writer) error {
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := sdk.Dial(ctx, cf.baseURL(), sdk.Options{
		TokenFunc: func(context.Context) (string, error) { return cf.readToken() },
		Pack:      pack,
		Logger:    log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("tail: %w", err)
	}
	defer c.Close()
	cursor := ""
	if oldest {
		cursor = sdk.Oldest
	}
	var (
		mu sync.Mutex // one line at a time on out
		wg sync.WaitGroup
	)
	errc := make(chan error, len(channels))
	for _, ch := range channels {
		s, err := c.Subscribe(ctx, ch, cursor)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tail: %s: %w", ch, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			for ev := range s.Events() {
				line := tailLine{Type: "event", Channel: ev.Channel, Cursor: ev.Cursor, Event: ev.Raw}
				if ev.Gap {
					line = tailLine{Type: "gap", Channel: ev.Channel}
				}
				mu.Lock()
				err := enc.Encode(line)
				mu.Unlock()
				if err != nil {
					errc <- err
					c.Close()
					return
				}
			}
			if err := s.Err(); err != nil && !errors.Is(err, sdk.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", ch, err)
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-c.Done():
	case err = <-errc:
	}
	c.Close()
	wg.Wait()
	if err == nil && ctx.Err() == nil {
		if cerr := c.Err(); !errors.Is(cerr, sdk.ErrClosed) {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	return nil
}
