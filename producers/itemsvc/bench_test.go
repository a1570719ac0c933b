package itemsvc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/producers"
)

// discardPublisher takes every answer and keeps none.
type discardPublisher struct{ n int }

func (p *discardPublisher) Publish(context.Context, string, string, producers.CloudEvent) error {
	p.n++
	return nil
}

// BenchmarkHandle is the item service's work for one command of the
// takedown benchmark (decode, answer, the answers' events), without Kafka:
// the answers go to a publisher that drops them. Items cycle through the
// demo catalogue, so after the first thousand each is confirmed again
// (one answer) as in a long run. allocs/op counts none of the benchmark's
// own.
func BenchmarkHandle(b *testing.B) {
	pub := &discardPublisher{}
	s, err := New(Config{Brokers: []string{"localhost:9092"}, Decode: decode}, pub, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	items := s.cfg.Catalogue.Items()
	cmds := make([]kafka.Message, len(items))
	ids := make([][]byte, len(items))
	for i, item := range items {
		m, err := producers.Message(DefaultCommandsTopic, item, producers.NewEvent("/switchboard/takedowns", producers.TypeTakedownRequested,
			item, fmt.Sprintf("corr-%d", i), map[string]string{"item_id": item, "reason": "court order", "requested_by": "officer-1"}))
		if err != nil {
			b.Fatal(err)
		}
		for _, h := range m.Headers {
			if h.Key == "ce_id" {
				ids[i] = h.Value
			}
		}
		cmds[i] = m
	}
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		i := n % len(cmds)
		// A new command id each time: an id seen before is skipped.
		id := ids[i]
		for j, k := len(id)-1, n; j >= len(id)-8; j, k = j-1, k/16 {
			id[j] = "0123456789abcdef"[k%16]
		}
		if !s.handle(ctx, ctx, cmds[i], time.Now()) {
			b.Fatal("not handled")
		}
		n++
	}
	if got := s.Stats().Duplicates; got != 0 {
		b.Fatalf("%d duplicates", got)
	}
}

// TestAnswerIDAndCommandKeyUnchanged pins answerID and commandOf to what
// they were made with before they moved to the stack: uuid.NewSHA1 over
// the length-prefixed parts, SHA-256 over the length-prefixed source and
// the id. An answer given again after an upgrade keeps its id.
func TestAnswerIDAndCommandKeyUnchanged(t *testing.T) {
	long := strings.Repeat("x", 300) // past the stack buffers
	for _, p := range [][4]string{
		{"/switchboard/takedowns", "0b6c3f52-6d0e-4f7a-9c55-1f2e3d4c5b6a", producers.TypeItemRemoved, "group-3"},
		{"/s", "1", producers.TypeTakedownConfirmed, ""},
		{long, long, producers.TypeTakedownRejected, long},
	} {
		var b []byte
		for _, part := range p {
			b = strconv.AppendInt(b, int64(len(part)), 10)
			b = append(b, ':')
			b = append(b, part...)
		}
		if got, want := answerID(p[0], p[1], p[2], p[3]), uuid.NewSHA1(answerNamespace, b).String(); got != want {
			t.Errorf("answerID%q = %s, want %s", p, got, want)
		}
		h := sha256.New()
		h.Write(strconv.AppendInt(nil, int64(len(p[0])), 10))
		h.Write([]byte{':'})
		h.Write([]byte(p[0]))
		h.Write([]byte(p[1]))
		if got, want := commandOf(p[0], p[1]), commandKey(h.Sum(nil)[:16]); got != want {
			t.Errorf("commandOf(%q, %q) = %x, want %x", p[0], p[1], got, want)
		}
	}
}
