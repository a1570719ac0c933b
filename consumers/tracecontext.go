package consumers

import "github.com/switchboard/switchboard/hub"

// The attributes of the CloudEvents distributed-tracing extension.
const (
	attrTraceParent = "traceparent"
	attrTraceState  = "tracestate"
)

// TraceContext returns the distributed-tracing extension of ev, an event
// Decode made: its traceparent and tracestate attributes (W3C Trace
// Context, SPEC §10), "" where unset or not a string. Decode keeps every
// extension in ev.JSON, from a ce_traceparent header in binary mode or a
// traceparent member in structured mode, so the extension costs an event
// nothing until it is asked for here.
func TraceContext(ev *hub.Event) (traceparent, tracestate string) {
	for k, v := range members(ev.JSON) {
		switch string(k) {
		case attrTraceParent:
			traceparent = unquote(v)
		case attrTraceState:
			tracestate = unquote(v)
		}
	}
	return traceparent, tracestate
}
