package ring

import "testing"

// TestQueue: values come out in the order they went in, across growth and
// wrap-around, and an empty queue says so.
func TestQueue(t *testing.T) {
	var q Queue[int]
	if _, ok := q.Pop(); ok {
		t.Fatal("an empty queue popped a value")
	}
	next, want := 0, 0
	for round := range 50 {
		for range 1 + round*7%100 {
			q.Push(next)
			next++
		}
		for range round * 5 % 90 {
			if q.Len() == 0 {
				break
			}
			if v, ok := q.Peek(); !ok || v != want {
				t.Fatalf("peek %d %v, want %d", v, ok, want)
			}
			if v, ok := q.Pop(); !ok || v != want {
				t.Fatalf("popped %d %v, want %d", v, ok, want)
			}
			want++
		}
		if q.Len() != next-want {
			t.Fatalf("len %d, want %d", q.Len(), next-want)
		}
	}
	for q.Len() > 0 {
		if v, _ := q.Pop(); v != want {
			t.Fatalf("popped %d, want %d", v, want)
		}
		want++
	}
	if want != next {
		t.Fatalf("%d values out, %d in", want, next)
	}
}
