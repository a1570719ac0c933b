package itemsvc

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/producers"
)

// TestItemServiceRestores: with RestoreTopic set the service answers the
// demo restores command too, on its own topics: an item taken down is put
// back (and a later takedown removes it again), an unknown item is
// rejected with not_found, and a repeated command is answered once.
func TestItemServiceRestores(t *testing.T) {
	const (
		cmds   = producers.DemoItemCommandsTopic
		events = producers.DemoItemEventsTopic
	)
	brokers := newCluster(t, isvcCommands, isvcEvents, cmds, events)
	h := &isvcHarness{t: t, brokers: brokers, pub: newProducer(t, brokers), tr: &kafka.Transport{}}
	h.w = &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: h.tr}
	t.Cleanup(func() { _ = h.w.Close(); h.tr.CloseIdleConnections() })
	svc := h.start(Config{RestoreTopic: cmds, RestoreEventsTopic: events})
	cat := DemoCatalogue()
	const item = "item-1"
	n := int64(len(isvcContainers(t, cat, item)))

	h.send(h.command(item, "c-1"))
	isvcWaitStats(t, svc.Service, Stats{Commands: 1, Confirmed: 1, Removed: n})

	restore := func(item, corr string) kafka.Message {
		ev := producers.NewEvent("/switchboard/restores", producers.TypeItemRestore, item, corr, map[string]string{"item_id": item, "requested_by": "test"})
		ev.ID = "restore-" + corr
		m, err := producers.Message(cmds, item, ev)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h.send(restore(item, "r-1"), restore(item, "r-1"), restore("item-1001", "r-2"))
	isvcWaitStats(t, svc.Service, Stats{Commands: 4, Confirmed: 1, Removed: n, Restored: 1, RestoreRejected: 1, Duplicates: 1})

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: fmt.Sprintf("test-restores-%d", time.Now().UnixNano()), Topic: events, StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	t.Cleanup(func() { _ = r.Close() })
	got := isvcByCorr(isvcNext(t, r, 2))
	var ok ItemRestored
	if a := got["r-1"]; len(a) != 1 || a[0].Type != producers.TypeItemRestored || a[0].Source != producers.ItemServiceSource || json.Unmarshal(a[0].Data, &ok) != nil ||
		ok.ItemID != item || !ok.WasRemoved || int64(len(ok.RestoredTo)) != n {
		t.Fatalf("restore of %s: %+v %+v", item, a, ok)
	}
	var no ItemRestoreRejected
	if a := got["r-2"]; len(a) != 1 || a[0].Type != producers.TypeItemRestoreRejected || json.Unmarshal(a[0].Data, &no) != nil || no.Reason != RejectNotFound {
		t.Fatalf("restore of an unknown item: %+v %+v", a, no)
	}
	// Restored: a new takedown removes it again.
	h.send(h.command(item, "c-2"))
	isvcWaitStats(t, svc.Service, Stats{Commands: 5, Confirmed: 2, Removed: 2 * n, Restored: 1, RestoreRejected: 1, Duplicates: 1})
}
