package redisbus

import (
	"fmt"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestBusLostWrites: a log that lost its last writes (a failover to a
// replica that had not received them) must not go on in the same epoch, or
// a subscriber past its top would skip what it appends next. Whoever saw
// the lost top catches it: the node that published it (its next append
// starts a new epoch), or a node that heard it announced (it hears the log
// go backwards and moves it to a new epoch). Either way the subscriber is
// told with a gap, then gets the new epoch from its start.
func TestBusLostWrites(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		for _, who := range []string{"publisher", "listener"} {
			t.Run(srv.Name+"/"+who, func(t *testing.T) {
				ctx := t.Context()
				ch := "reports-" + who
				a := newBus(t, srv, Config{})
				b := newBus(t, srv, Config{})
				f := subscribed(t, b, ch)
				for i := 1; i <= 5; i++ {
					if err := a.Publish(ctx, []string{ch}, ev(i)); err != nil {
						t.Fatal(err)
					}
				}
				if got := collect(t, f, 5); fmt.Sprint(got) != "[e-1 e-2 e-3 e-4 e-5]" {
					t.Fatalf("got %v", got)
				}
				before := mustTop(t, a, ch)

				// The new master never got entries 4 and 5.
				meta, log, _ := a.keys(ch)
				rdb := a.Client()
				rdb.HSet(ctx, meta, "top", 3)
				kept, _ := rdb.XRangeN(ctx, log, "-", "+", 3).Result()
				rdb.Del(ctx, log)
				for _, m := range kept {
					rdb.XAdd(ctx, &redis.XAddArgs{Stream: log, ID: m.ID, Values: m.Values})
				}
				rdb.ZRem(ctx, a.idsKey(ch), "/t\x00e-4", "/t\x00e-5")

				p := a
				if who == "listener" {
					p = newBus(t, srv, Config{}) // saw nothing
				}
				if err := p.Publish(ctx, []string{ch}, ev(6)); err != nil {
					t.Fatal(err)
				}
				got := collect(t, f, 5)
				if fmt.Sprint(got) != "[gap e-1 e-2 e-3 e-6]" {
					t.Fatalf("after the loss: %v", got)
				}
				if after := mustTop(t, a, ch); after.Epoch == before.Epoch || after.Offset != 4 {
					t.Fatalf("top %v after %v: want a new epoch at 4", after, before)
				}
				if n := p.LostWrites.Load() + b.LostWrites.Load(); n != 1 {
					t.Fatalf("%d logs found to have lost writes, want 1", n)
				}
				// The log goes on in its new epoch, announced as usual.
				p.Publish(ctx, []string{ch}, ev(7))
				if got := collect(t, f, 1); !slices.Equal(got, []string{"e-7"}) {
					t.Fatalf("then %v", got)
				}
			})
		}
	}
}
