// Package ring is a FIFO queue on a ring buffer that grows by doubling:
// the order in which the memory backplane's entries and the memory outcome
// store's records were made, oldest first, for eviction.
package ring

// Queue is a FIFO queue of T. The zero value is empty and ready.
type Queue[T any] struct {
	buf     []T
	head, n int
}

// Len is how many values q holds.
func (q *Queue[T]) Len() int { return q.n }

// Push adds v at the back.
func (q *Queue[T]) Push(v T) {
	if q.n == len(q.buf) {
		grown := make([]T, max(2*len(q.buf), 64))
		for i := 0; i < q.n; i++ {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
}

// Peek returns the front value, if any, and leaves it there.
func (q *Queue[T]) Peek() (T, bool) {
	if q.n == 0 {
		var zero T
		return zero, false
	}
	return q.buf[q.head], true
}

// Pop removes and returns the front value, if any; its slot is cleared,
// so q keeps nothing it let go alive.
func (q *Queue[T]) Pop() (T, bool) {
	var zero T
	if q.n == 0 {
		return zero, false
	}
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return v, true
}
