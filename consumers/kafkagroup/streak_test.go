package kafkagroup

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/segmentio/kafka-go"
)

// logBuffer is a slog handler's output, safe to read while written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines at level (like "WARN").
func (b *logBuffer) lines(level string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for l := range strings.Lines(b.buf.String()) {
		if strings.Contains(l, "level="+level) {
			out = append(out, l)
		}
	}
	return out
}

func newTestStreak() (*Streak, *logBuffer) {
	buf := &logBuffer{}
	return NewStreak(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "kafka reader"), buf
}

var errBroker = errors.New("connection refused")

func TestStreakPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newTestStreak()
		fresh := time.Second // the failed call blocked: kafka-go paced it

		if got := s.Fail(errBroker, fresh); got != PauseMin {
			t.Errorf("first error: pause %s, want %s", got, PauseMin)
		}
		time.Sleep(2 * time.Second)
		if got := s.Fail(errBroker, fresh); got != 500*time.Millisecond {
			t.Errorf("after 2 s: pause %s, want a quarter of the streak's age, 500ms", got)
		}
		time.Sleep(time.Minute)
		if got := s.Fail(errBroker, fresh); got != PauseMax {
			t.Errorf("after a minute: pause %s, want the cap %s", got, PauseMax)
		}

		// A reader's queue of stale errors drains at PauseMin each, however
		// old the streak.
		for i := range queuedBurst {
			if got := s.Fail(errBroker, 0); got != PauseMin {
				t.Fatalf("queued error %d: pause %s, want %s", i+1, got, PauseMin)
			}
		}
		// More queued errors in a row than a queue holds: a loop that
		// fails at once, paced like fresh errors.
		if got := s.Fail(errBroker, 0); got != PauseMax {
			t.Errorf("error %d in a row returned at once: pause %s, want %s", queuedBurst+1, got, PauseMax)
		}
		// A success starts the next streak from the beginning.
		s.Succeed()
		if got := s.Fail(errBroker, fresh); got != PauseMin {
			t.Errorf("first error of a new streak: pause %s, want %s", got, PauseMin)
		}
	})
}

func TestStreakErrAndLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, logs := newTestStreak()
		if err := s.Err(); err != nil {
			t.Fatalf("Err with no errors = %v", err)
		}
		s.Succeed() // no streak: nothing to do, nothing logged

		s.Fail(errors.New("first"), time.Second)
		if err := s.Err(); err != nil {
			t.Errorf("Err at once = %v, want nil within the grace", err)
		}
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			s.Fail(errBroker, time.Second)
		}
		err := s.Err()
		var se *StreakError
		if !errors.As(err, &se) || se.Errors != 51 || !errors.Is(err, errBroker) {
			t.Fatalf("Err after 5 s of errors = %#v, want a StreakError of 51 errors wrapping the last", err)
		}
		if !strings.Contains(err.Error(), "51 errors") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Err text %q: want the count and the last error", err)
		}
		if w := logs.lines("WARN"); len(w) != 1 || !strings.Contains(w[0], "is failing") {
			t.Errorf("warnings %q: want one, when the streak passed the grace", w)
		}

		time.Sleep(remindEvery)
		s.Fail(errBroker, time.Second)
		if w := logs.lines("WARN"); len(w) != 2 || !strings.Contains(w[1], "still failing") {
			t.Errorf("warnings %q: want a reminder after %s", w, remindEvery)
		}

		s.Succeed()
		if err := s.Err(); err != nil {
			t.Errorf("Err after a success = %v", err)
		}
		if i := logs.lines("INFO"); len(i) != 1 || !strings.Contains(i[0], "works again") || !strings.Contains(i[0], "errors=52") {
			t.Errorf("info lines %q: want one saying it works again after 52 errors", i)
		}

		// A short streak is not worth a warning.
		s.Fail(errBroker, time.Second)
		s.Succeed()
		if w := logs.lines("WARN"); len(w) != 2 {
			t.Errorf("a short streak logged a warning: %q", w[2:])
		}
	})
}

func TestStreakSample(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newTestStreak()
		s.KafkaLogger().Printf("unable to dial %s", "b1")
		tick := func(failures, steps int64) {
			since := time.Now()
			time.Sleep(SampleInterval)
			s.sample(time.Now(), since, failures, steps)
		}

		tick(0, 5) // all well: no streak
		if s.active.Load() {
			t.Fatal("a good sample began a streak")
		}
		tick(2, 0) // errors kafka-go retried by itself begin one
		tick(0, 0) // a reader stuck in a dial: nothing tells
		tick(0, 0)
		tick(0, 0)
		var se *StreakError
		if err := s.Err(); !errors.As(err, &se) || !strings.Contains(err.Error(), "unable to dial b1") {
			t.Fatalf("Err = %v, want the streak with kafka-go's last message", err)
		}

		// Progress in a sample that also had a fetch error is no success.
		since := time.Now()
		time.Sleep(SampleInterval / 2)
		s.Fail(errBroker, time.Second)
		time.Sleep(SampleInterval / 2)
		s.sample(time.Now(), since, 0, 3)
		if s.Err() == nil {
			t.Fatal("a sample with a fetch error ended the streak")
		}
		tick(0, 3) // a clean sample with progress ends it
		if err := s.Err(); err != nil {
			t.Errorf("Err after a clean sample = %v", err)
		}
	})
}

func TestTiming(t *testing.T) {
	tests := []struct {
		name  string
		in    Timing
		match string
	}{
		{"zero takes the defaults", Timing{}, ""},
		{"heartbeat below session", Timing{SessionTimeout: 10 * time.Second, HeartbeatInterval: 3 * time.Second}, ""},
		{"heartbeat equal to session", Timing{SessionTimeout: 6 * time.Second, HeartbeatInterval: 6 * time.Second}, "heartbeat interval 6s must be below the session timeout 6s"},
		{"heartbeat above the default session", Timing{HeartbeatInterval: 7 * time.Second}, "below the session timeout 6s"},
		{"negative", Timing{RebalanceTimeout: -time.Second}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Check()
			if (err == nil) != (tt.match == "") || (err != nil && !strings.Contains(err.Error(), tt.match)) {
				t.Errorf("Check = %v, want %q", err, tt.match)
			}
		})
	}

	var rc kafka.ReaderConfig
	Timing{HeartbeatInterval: 2 * time.Second}.Apply(&rc)
	if rc.SessionTimeout != DefaultSessionTimeout || rc.HeartbeatInterval != 2*time.Second || rc.RebalanceTimeout != DefaultRebalanceTimeout ||
		rc.JoinGroupBackoff != joinGroupBackoff || rc.ReadBackoffMax != readBackoffMax {
		t.Errorf("Apply: %+v", rc)
	}
}
