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
	// Topic is the Kafka topic the event was read from. The consumer sets
	// it so the layers above can tell where an event came from (the sync
	// adapter trusts outcomes only from their declared topic); backplanes do
	// not carry it between nodes.
	Topic string
	// JSON is the whole event in the CloudEvents structured JSON format, on
	// one line.
	JSON []byte
}

// key identifies an event across channels: CloudEvents makes source+id unique.
func (e *Event) key() string { return e.Source + "\x00" + e.ID }

// keyHash is the FNV-1a hash of key(), computed without building it: the
// SSE writer takes it for every event of a multi-channel stream, and the
// memory backplane's logs index their events by it.
func (e *Event) keyHash() uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(e.Source); i++ {
		h ^= uint64(e.Source[i])
		h *= 1099511628211
	}
	h *= 1099511628211 // the "\x00" separator: h ^= 0 leaves h as it is
	for i := 0; i < len(e.ID); i++ {
		h ^= uint64(e.ID[i])
		h *= 1099511628211
	}
	return h
}
