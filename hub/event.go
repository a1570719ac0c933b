package hub

// Event is one CloudEvent as the hub carries it: the attributes the hub routes
// and dedupes on, and the event's structured-mode JSON encoding, which every
// door sends unchanged. An Event is immutable once published.
type Event struct {
	ID            string
	Source        string
	Type          string
	Subject       string
	CorrelationID string
	// JSON is the whole event in the CloudEvents structured JSON format, on
	// one line.
	JSON []byte
}

// key identifies an event across channels: CloudEvents makes source+id unique.
func (e *Event) key() string { return e.Source + "\x00" + e.ID }
