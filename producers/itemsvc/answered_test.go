package itemsvc

import (
	"context"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/producers"
)

func TestAnsweredSet(t *testing.T) {
	a := newAnsweredSet(3)
	k := func(i int) commandKey { return commandOf("/test", fmt.Sprint(i)) }
	for i := range 3 {
		a.add(k(i))
	}
	a.add(k(1)) // again: no change
	for i := range 3 {
		if !a.has(k(i)) {
			t.Errorf("command %d forgotten with room to spare", i)
		}
	}
	a.add(k(3)) // full: the oldest, 0, goes
	a.add(k(4)) // then 1
	for i, want := range []bool{false, false, true, true, true} {
		if got := a.has(k(i)); got != want {
			t.Errorf("has(%d) = %v, want %v", i, got, want)
		}
	}
	if n := a.len(); n != 3 {
		t.Errorf("remembers %d commands, want the cap, 3", n)
	}

	// The key is exact about where the source ends and the id begins.
	if commandOf("/a", "b/c") == commandOf("/ab", "/c") || commandOf("/a/", "bc") == commandOf("/a", "/bc") {
		t.Error("two (source, id) pairs share a key")
	}
	if commandOf("/s", "1") != commandOf("/s", "1") {
		t.Error("one (source, id) pair has two keys")
	}
}

func TestAnswerID(t *testing.T) {
	id := answerID("/switchboard/takedowns", "cmd-1", producers.TypeItemRemoved, "group-1")
	if again := answerID("/switchboard/takedowns", "cmd-1", producers.TypeItemRemoved, "group-1"); again != id {
		t.Errorf("the same answer has two ids: %s, %s", id, again)
	}
	others := []string{
		answerID("/switchboard/takedowns", "cmd-2", producers.TypeItemRemoved, "group-1"),
		answerID("/other", "cmd-1", producers.TypeItemRemoved, "group-1"),
		answerID("/switchboard/takedowns", "cmd-1", producers.TypeItemRemoved, "group-2"),
		answerID("/switchboard/takedowns", "cmd-1", producers.TypeTakedownConfirmed, ""),
		answerID("/switchboard/takedowns", "cmd-", "1"+producers.TypeItemRemoved, "group-1"),
	}
	for _, o := range others {
		if o == id {
			t.Errorf("another answer shares the id %s", id)
		}
	}
}

// eventsOnTopic counts the records of the events topic.
func (h *isvcHarness) eventsOnTopic() int64 {
	h.t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(h.brokers...), Transport: tr, Timeout: waitLong}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	var reqs []kafka.OffsetRequest
	for p := range 3 {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{isvcEvents: reqs}})
	if err != nil {
		h.t.Fatalf("list offsets: %v", err)
	}
	var n int64
	for _, p := range lo.Topics[isvcEvents] {
		n += p.LastOffset
	}
	return n
}

// TestItemServiceAppliesACommandOnce publishes one command twice, as the
// sync adapter does when it is not sure the first write went through: the
// item service answers it once. A second instance, which does not know the
// command (as after a restart), answers it again with the same event ids,
// so the hub, which keeps one event per source and id, drops the repeat.
func TestItemServiceAppliesACommandOnce(t *testing.T) {
	h := newIsvcHarness(t)
	cat := DemoCatalogue()
	const item = "item-1" // three containers
	removed := int64(len(isvcContainers(t, cat, item)))
	cmd := h.command(item, "c-once")
	svc := h.start(Config{})

	h.send(cmd, cmd) // the same record twice: same source and id
	isvcWaitStats(t, svc.Service, Stats{Commands: 2, Duplicates: 1, Confirmed: 1, Removed: removed})
	// Every answer is published when the counters say so: the topic holds
	// one set, nothing for the repeat.
	if n := h.eventsOnTopic(); n != removed+1 {
		t.Fatalf("%d events on the topic, want %d: one item.removed per container and one confirmation", n, removed+1)
	}
	first := isvcNext(t, h.eventReader(), int(removed+1))
	isvcCheck(t, cat, item, "c-once", first, true)
	if err := svc.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.checkAllCommitted(DefaultGroupID)

	// Another instance, with its own group and an empty memory, reads both
	// records again.
	other := h.start(Config{GroupID: "itemsvc-after-a-restart"})
	isvcWaitStats(t, other.Service, Stats{Commands: 2, Duplicates: 1, Confirmed: 1, Removed: removed})
	all := isvcNext(t, h.eventReader(), int(2*(removed+1)))
	again := all[removed+1:]
	isvcCheck(t, cat, item, "c-once", again, true)
	for i := range first {
		if again[i].ID != first[i].ID || again[i].Type != first[i].Type {
			t.Errorf("answer %d: %s %s the first time, %s %s again; want the same id", i, first[i].Type, first[i].ID, again[i].Type, again[i].ID)
		}
	}
	seen := map[string]bool{}
	for _, a := range first {
		if seen[a.ID] {
			t.Errorf("two answers share the id %s", a.ID)
		}
		seen[a.ID] = true
	}
}
