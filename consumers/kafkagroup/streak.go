package kafkagroup

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// Streak settings.
const (
	// PauseMin is the pause after an error at the start of a streak, and
	// after each error that was already queued.
	PauseMin = 10 * time.Millisecond
	// PauseMax caps the pause after an error.
	PauseMax = time.Second
	// Grace is how long a streak lasts before Err reports it: a reset
	// connection that kafka-go reopens at once is not worth a red /readyz.
	Grace = 2 * time.Second
	// SampleInterval is how often Watch reads the reader's statistics.
	SampleInterval = time.Second

	// queuedWithin: a call that failed faster than this returned an error
	// kafka-go had already queued.
	queuedWithin = 5 * time.Millisecond
	// queuedBurst is how many queued errors in a row get PauseMin: a
	// reader queues at most 100 (kafka-go's QueueCapacity), so a longer
	// run is a loop that fails at once, and gets the growing pause.
	queuedBurst = 100
	// remindEvery is how often a streak that goes on is logged again.
	remindEvery = 30 * time.Second
)

// StreakError is the error of a streak that has lasted past Grace.
type StreakError struct {
	// Since is when the streak began.
	Since time.Time
	// Errors is how many errors it has counted.
	Errors int
	// Last is the last of them.
	Last error
}

func (e *StreakError) Error() string {
	return fmt.Sprintf("failing for %s (%d errors), the last: %v", time.Since(e.Since).Round(100*time.Millisecond), e.Errors, e.Last)
}

// Unwrap returns the last error.
func (e *StreakError) Unwrap() error { return e.Last }

// Streak follows a run of errors against Kafka, from the first error to
// the first success after it. It answers three questions: how long to
// pause before the next attempt (Fail), whether the reader is healthy
// (Err), and what to log: the streak once when it passes Grace, a
// reminder every 30 s, and its end, with the count, rather than every
// error. It is safe for concurrent use; the zero value is not usable: use
// NewStreak.
//
// The pause after an error is PauseMin at first and grows with the
// streak's age, to PauseMax after four seconds; but an error that was
// already queued (kafka-go's reader queues the errors of its partition
// readers, and hands out errors of a fault that may be over) costs only
// PauseMin, so draining a queue of stale errors does not hold back the
// records behind them.
type Streak struct {
	log  *slog.Logger
	what string

	active atomic.Bool // a streak is on: Succeed has work to do

	mu        sync.Mutex
	start     time.Time // zero: no streak
	last      time.Time // of the last error
	count     int
	err       error
	queued    int // queued errors in a row
	warned    bool
	remindAt  time.Time
	kafkaNote string // kafka-go's last logged error
}

// NewStreak returns a Streak that logs to log, naming what fails ("kafka
// reader").
func NewStreak(log *slog.Logger, what string) *Streak {
	return &Streak{log: log, what: what}
}

// Fail records err and returns how long to pause before trying again.
// waited is how long the failed call blocked: an error returned at once
// was queued.
func (s *Streak) Fail(err error, waited time.Duration) time.Duration {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(now, err)
	if waited < queuedWithin {
		s.queued++
	} else {
		s.queued = 0
	}
	if s.queued > 0 && s.queued <= queuedBurst {
		return PauseMin
	}
	return min(max(now.Sub(s.start)/4, PauseMin), PauseMax)
}

func (s *Streak) failLocked(now time.Time, err error) {
	if s.start.IsZero() {
		s.start, s.count, s.queued, s.warned = now, 0, 0, false
		s.active.Store(true)
	}
	s.count++
	s.err = err
	s.last = now
	s.log.Debug(s.what+" failed", "err", err, "streak", s.count)
	s.warnLocked(now)
}

// warnLocked logs the streak when it passes Grace, and every remindEvery
// after that.
func (s *Streak) warnLocked(now time.Time) {
	age := now.Sub(s.start)
	switch {
	case age <= Grace:
	case !s.warned:
		s.warned, s.remindAt = true, now.Add(remindEvery)
		s.log.Warn(s.what+" is failing; retrying", "for", age.Round(time.Millisecond), "errors", s.count, "err", s.err)
	case now.After(s.remindAt):
		s.remindAt = now.Add(remindEvery)
		s.log.Warn(s.what+" is still failing; retrying", "for", age.Round(time.Millisecond), "errors", s.count, "err", s.err)
	}
}

// Succeed ends the streak, if there is one. It is cheap when there is not.
func (s *Streak) Succeed() {
	if !s.active.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.succeedLocked(time.Now())
}

func (s *Streak) succeedLocked(now time.Time) {
	if s.start.IsZero() {
		return
	}
	if s.warned {
		s.log.Info(s.what+" works again", "after", now.Sub(s.start).Round(time.Millisecond), "errors", s.count)
	} else {
		s.log.Debug(s.what+" works again", "after", now.Sub(s.start).Round(time.Millisecond), "errors", s.count)
	}
	s.start, s.err, s.count, s.queued, s.warned = time.Time{}, nil, 0, 0, false
	s.active.Store(false)
}

// Err returns a *StreakError when a streak has lasted longer than Grace,
// and nil otherwise.
func (s *Streak) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() || time.Since(s.start) <= Grace {
		return nil
	}
	return &StreakError{Since: s.start, Errors: s.count, Last: s.err}
}

// KafkaLogger is a kafka-go ErrorLogger that logs at debug level, as the
// streak reports what matters, and keeps the message for Watch.
func (s *Streak) KafkaLogger() kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) {
		text := fmt.Sprintf(msg, args...)
		s.log.Debug(s.what+": kafka-go: "+text, "streak", s.active.Load())
		s.mu.Lock()
		s.kafkaNote = text
		s.mu.Unlock()
	})
}

// Watch reads r's statistics every SampleInterval until ctx ends. It
// fills in what the caller can not see, as a reader's FetchMessage blocks
// when nothing comes, error or record: errors kafka-go met and retried
// itself begin a streak (or go on with one), and a sample in which the
// reader fetched from a partition or joined the group, without an error,
// ends one. Watch takes the reader's statistics, whose counters reset
// when read: nothing else may call r.Stats.
func (s *Streak) Watch(ctx context.Context, r *kafka.Reader) {
	t := time.NewTicker(SampleInterval)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st := r.Stats()
			s.sample(now, prev, st.Errors, st.Fetches+st.Rebalances)
			prev = now
		}
	}
}

// sample judges one interval, from since to now, of a reader's life:
// failures and successful steps are counts from its statistics.
func (s *Streak) sample(now, since time.Time, failures, steps int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case failures > 0:
		note := s.kafkaNote
		if note == "" {
			note = "see the debug log"
		}
		s.failLocked(now, fmt.Errorf("%d errors inside the kafka reader, the last: %s", failures, note))
	case steps > 0 && (s.start.IsZero() || s.last.Before(since)):
		s.succeedLocked(now)
	case !s.start.IsZero():
		s.warnLocked(now)
	}
}
