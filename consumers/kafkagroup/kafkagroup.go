// Package kafkagroup is what the hub's consumer and the simulated item
// service share about reading Kafka in a consumer group: the group timing
// and its defaults, the reader settings that make recovery after a broker
// fault fast, and Streak, which paces retries through a run of broker
// errors and says whether the reader is healthy.
package kafkagroup

import (
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Defaults of Timing. kafka-go's own (30 s session, 3 s heartbeat, 30 s
// rebalance) leave a dead member's partitions, and those of a member that
// lost its connection and rejoined under a new member ID, unread for about
// 30 s: three times takedown.timeout.
const (
	// DefaultSessionTimeout is how long the coordinator waits without a
	// heartbeat before it drops a member and hands its partitions to the
	// others. 6 s is the lowest that Kafka (group.min.session.timeout.ms)
	// and kfake accept by default.
	DefaultSessionTimeout = 6 * time.Second
	// DefaultHeartbeatInterval is how often a member heartbeats; a
	// rebalance is noticed at the next heartbeat. Kafka advises at most a
	// third of the session timeout.
	DefaultHeartbeatInterval = time.Second
	// DefaultRebalanceTimeout is how long the coordinator waits for the
	// members to rejoin during a rebalance. kafka-go members rejoin at
	// their next heartbeat, so this only matters for a member that is
	// stuck; it then bounds how long the group waits for it.
	DefaultRebalanceTimeout = 10 * time.Second
)

// Reader settings that are not configurable.
const (
	// joinGroupBackoff is kafka-go's pause before joining the group again
	// after a failed attempt; its default is 5 s, and three failed joins
	// pass before the reader reports the error.
	joinGroupBackoff = 500 * time.Millisecond
	// readBackoffMax caps kafka-go's pause before a partition reader
	// reconnects; its default is 1 s.
	readBackoffMax = 500 * time.Millisecond
)

// Timing is a consumer group member's session, heartbeat and rebalance
// timing. Zero fields take the Default... values.
type Timing struct {
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
}

// WithDefaults returns t with its zero fields set to the defaults.
func (t Timing) WithDefaults() Timing {
	if t.SessionTimeout == 0 {
		t.SessionTimeout = DefaultSessionTimeout
	}
	if t.HeartbeatInterval == 0 {
		t.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if t.RebalanceTimeout == 0 {
		t.RebalanceTimeout = DefaultRebalanceTimeout
	}
	return t
}

// Check reports a negative field, or a heartbeat interval that is not
// below the session timeout (the member would be dropped between two
// heartbeats). Zero fields are fine: they take the defaults.
func (t Timing) Check() error {
	if t.SessionTimeout < 0 || t.HeartbeatInterval < 0 || t.RebalanceTimeout < 0 {
		return fmt.Errorf("session timeout %s, heartbeat interval %s and rebalance timeout %s must not be negative",
			t.SessionTimeout, t.HeartbeatInterval, t.RebalanceTimeout)
	}
	d := t.WithDefaults()
	if d.HeartbeatInterval >= d.SessionTimeout {
		return fmt.Errorf("heartbeat interval %s must be below the session timeout %s", d.HeartbeatInterval, d.SessionTimeout)
	}
	return nil
}

// Apply sets t (with defaults) and the recovery settings on rc.
func (t Timing) Apply(rc *kafka.ReaderConfig) {
	d := t.WithDefaults()
	rc.SessionTimeout = d.SessionTimeout
	rc.HeartbeatInterval = d.HeartbeatInterval
	rc.RebalanceTimeout = d.RebalanceTimeout
	rc.JoinGroupBackoff = joinGroupBackoff
	rc.ReadBackoffMax = readBackoffMax
}
