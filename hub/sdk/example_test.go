package sdk_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/switchboard/switchboard/hub/sdk"
)

// exampleNode starts a hub's WebSocket door on a real socket, holding two
// item.reported events on "reports"; stop ends it.
func exampleNode() (url string, srv *testServer) {
	srv = newServer("partner-token")
	srv.publish("item.reported", "item-1", "", map[string]string{"reason": "spam"}, "reports")
	srv.publish("item.reported", "item-2", "", map[string]string{"reason": "fraud"}, "reports")
	return srv.URL(), srv
}

// Subscribe from the oldest event history holds and print each event.
func Example() {
	url, srv := exampleNode()
	defer srv.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, url, sdk.Options{Token: "partner-token"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "reports", sdk.Oldest)
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev := <-sub.Events()
		fmt.Println(ev.Channel, ev.Type, ev.Subject, string(ev.Data))
	}
	// Output:
	// reports item.reported item-1 {"reason":"spam"}
	// reports item.reported item-2 {"reason":"fraud"}
}

// Keep the cursor of the last event handled; a later subscription after
// it (in this process or another) gets exactly what came since.
func ExampleClient_Subscribe_resume() {
	url, srv := exampleNode()
	defer srv.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, url, sdk.Options{Token: "partner-token"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, _ := c.Subscribe(ctx, "reports", sdk.Oldest)
	first := <-sub.Events()
	saved := first.Cursor // store it with what the event changed
	sub.Unsubscribe(ctx)

	sub, err = c.Subscribe(ctx, "reports", saved)
	if err != nil {
		log.Fatal(err)
	}
	ev := <-sub.Events()
	fmt.Println("resumed with", ev.Subject)
	// Output: resumed with item-2
}

// A gap says history could not cover the cursor: what was missed must be
// fetched another way; live events follow.
func ExampleEvent_gap() {
	url, srv := exampleNode()
	defer srv.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, url, sdk.Options{Token: "partner-token"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "reports", "gone.7") // a cursor of a lost history
	if err != nil {
		log.Fatal(err)
	}
	ev := <-sub.Events()
	fmt.Println("gap:", ev.Gap, ev.Channel)
	// Output: gap: true reports
}

// Call a declared command and wait for its result. Against a node, the
// command "takedowns" takes {"item_id", "reason"} and returns "confirmed",
// or "rejected" with Reason "not_found" for an unknown item.
func ExampleClient_Call() {
	url, srv := exampleNode() // this node's only command is "echo"
	defer srv.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, url, sdk.Options{Token: "partner-token"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	res, err := c.Call(ctx, "echo", map[string]any{"item_id": "item-9"}, "order-4711")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, res.CorrelationID, len(res.Progress), string(res.Event.Data))
	// Output: confirmed c-order-4711 1 {"item_id":"item-9"}
}

// A token function is called on every connection and reconnection, so a
// rotated token is used from the next connection on. A token the server
// refuses (close 1008) is retried only if the function returns another.
func ExampleDial_tokenFunc() {
	url, srv := exampleNode()
	defer srv.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tokens := func(ctx context.Context) (string, error) {
		return "partner-token", nil // e.g. read from a file a sidecar refreshes
	}
	c, err := sdk.Dial(ctx, url, sdk.Options{TokenFunc: tokens})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("connected")
	// Output: connected
}
