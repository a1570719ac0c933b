package redisbus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestSharedNamespace: a corr: channel is announced on the node-level
// channel, so listening to one sends nothing to Redis; its entries still
// reach the node that listens (and no other listener), in order, with
// their own positions, and a listener that was cancelled hears nothing.
func TestSharedNamespace(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			a := newBus(t, srv, Config{})
			b := newBus(t, srv, Config{})
			before := b.Commands.Load()
			col, other := newCollector(), newCollector()
			cancel, err := b.Listen(ctx, "corr:x", col.deliver)
			if err != nil {
				t.Fatal(err)
			}
			cancelOther, err := b.Listen(ctx, "corr:y", other.deliver)
			if err != nil {
				t.Fatal(err)
			}
			if n := b.Commands.Load() - before; n != 0 {
				t.Fatalf("listening to two corr: channels sent %d Redis commands, want 0", n)
			}
			for i := 1; i <= 3; i++ {
				if err := a.Publish(ctx, []string{"takedowns", "corr:x"}, ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			got := col.wait(t, 3)
			for i, e := range got {
				if e.Channel != "corr:x" || e.Pos.Offset != uint64(i+1) || e.Event.ID != fmt.Sprintf("e-%d", i+1) {
					t.Fatalf("entry %d: %+v", i, e)
				}
			}
			// History stays per channel: a cursor of corr:x reads on.
			r, err := a.Read(ctx, "corr:x", &got[0].Pos)
			if err != nil || r.Gap || len(r.Entries) != 2 || r.Top != got[2].Pos {
				t.Fatalf("read after the first: %+v %v", r, err)
			}
			cancel()
			cancelOther()
			if err := a.Publish(ctx, []string{"corr:x", "corr:y"}, ev(4)); err != nil {
				t.Fatal(err)
			}
			// The node still hears the shared channel (another listener
			// proves the announcement went by) but delivers to nobody.
			probe := newCollector()
			stop, err := b.Listen(ctx, "corr:z", probe.deliver)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if err := a.Publish(ctx, []string{"corr:z"}, ev(5)); err != nil {
				t.Fatal(err)
			}
			probe.wait(t, 1)
			col.mu.Lock()
			n := len(col.got)
			col.mu.Unlock()
			other.mu.Lock()
			m := len(other.got)
			other.mu.Unlock()
			if n != 3 || m != 0 {
				t.Fatalf("after cancel: corr:x got %d entries (want 3), corr:y %d (want 0)", n, m)
			}
		})
	}
}

// TestSharedNamespaceResync: when the node-level channel's connection is
// killed, every shared listener is told to resync once it is back, since
// announcements made meanwhile are lost (real server: CLIENT KILL).
func TestSharedNamespaceResync(t *testing.T) {
	srv := redistest.Real(t)
	ctx := t.Context()
	name := "sb-shared-" + strings.TrimSuffix(srv.Prefix, ":")
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.ClientName = name
	b, err := New(ctx, redis.NewClient(opts), Config{Prefix: srv.Prefix}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	col := newCollector()
	cancel, err := b.Listen(ctx, "corr:r", col.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	admin := srv.Client()
	defer admin.Close()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " sub=1 ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d pub/sub connections of %s, want 1:\n%s", killed, name, list)
	}
	got := col.wait(t, 1)
	if !got[0].Resync || got[0].Channel != "corr:r" {
		t.Fatalf("after the kill: %+v, want a resync of corr:r", got[0])
	}
}

// TestClusterSharedNamespace: on a Cluster the node-level channel is
// classic pub/sub, which reaches every node wherever corr:'s slot is.
func TestClusterSharedNamespace(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	ctx, cancelCtx := context.WithTimeout(t.Context(), time.Minute)
	defer cancelCtx()
	a, err := New(ctx, c.Client(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(ctx, c.Client(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	masters := map[string]bool{}
	var cols []*collector
	for i := range 12 {
		ch := fmt.Sprintf("corr:c%d", i)
		masters[c.MasterOf(t, b.liveName(ch)).Addr] = true
		col := newCollector()
		stop, err := b.Listen(ctx, ch, col.deliver)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		cols = append(cols, col)
		if err := a.Publish(ctx, []string{ch}, ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, col := range cols {
		if e := col.wait(t, 1)[0]; e.Event.ID != fmt.Sprintf("e-%d", i) || e.Pos.Offset != 1 {
			t.Fatalf("corr:c%d: %+v", i, e)
		}
	}
	if len(masters) != 3 {
		t.Errorf("channels on %d masters, want 3", len(masters))
	}
}
