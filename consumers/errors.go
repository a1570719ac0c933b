package consumers

import "errors"

// Sentinel errors of the consumers package. Callers test them with errors.Is.
var (
	// ErrInvalidEvent means a Kafka record is not a valid CloudEvents 1.0
	// event in the Kafka protocol binding. The wrapping error says why; the
	// record goes to the dead-letter topic with that reason.
	ErrInvalidEvent = errors.New("consumers: invalid event")
	// ErrBadRoute means a route's topic or channel template is unusable.
	ErrBadRoute = errors.New("consumers: bad route")
	// ErrKafkaFailing means the consumer's reads from Kafka have failed
	// for more than a moment; Healthy wraps it with the count and the
	// last error.
	ErrKafkaFailing = errors.New("consumers: reading from kafka is failing")
)
