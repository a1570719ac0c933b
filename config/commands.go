package config

import (
	"time"

	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// TopicRoute is one entry of kafka.topics (SPEC §2.1): a Kafka topic the
// hub consumes and the channel templates its events are fanned out to.
type TopicRoute struct {
	// Name is the Kafka topic.
	Name string `mapstructure:"name" yaml:"name"`
	// Types, when set, are the only CloudEvents types routed; events of
	// other types are committed and not fanned out.
	Types []string `mapstructure:"types" yaml:"types,omitempty"`
	// Channels are channel templates with the placeholders {subject},
	// {correlationid}, {type}, {source} and {data.<field>}.
	Channels []string `mapstructure:"channels" yaml:"channels"`
}

// Command declares one synchronous command (SPEC §5.1): POST /v1/<name>,
// GET /v1/<name>/{correlation_id} and the WebSocket call frame.
type Command struct {
	// Name is the path segment: POST /v1/<name>.
	Name string `mapstructure:"name" yaml:"name"`
	// Roles may call the command.
	Roles []string `mapstructure:"roles" yaml:"roles"`
	// Topic is where the command record is published.
	Topic string `mapstructure:"topic" yaml:"topic"`
	// Type is the command record's CloudEvents type.
	Type string `mapstructure:"type" yaml:"type"`
	// Key names the data field that is the record key and the subject.
	Key string `mapstructure:"key" yaml:"key"`
	// Fields are the request body's members.
	Fields CommandFields `mapstructure:"fields" yaml:"fields"`
	// OutcomeTopic is the only topic whose events may change the command.
	OutcomeTopic string `mapstructure:"outcome_topic" yaml:"outcome_topic"`
	// OutcomeSources are the CloudEvents sources trusted to answer; empty
	// means the built-in simulated services' sources.
	OutcomeSources []string `mapstructure:"outcome_sources" yaml:"outcome_sources,omitempty"`
	// Progress are event types shown on corr: and stored, never final.
	Progress []string `mapstructure:"progress" yaml:"progress,omitempty"`
	// Outcomes map terminal events to HTTP statuses; the first match wins.
	Outcomes []CommandOutcome `mapstructure:"outcomes" yaml:"outcomes"`
	// Timeout is the default wait; zero means takedown.timeout.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout,omitempty"`
}

// CommandFields are the members a command's request body may hold.
type CommandFields struct {
	Required []string `mapstructure:"required" yaml:"required"`
	Optional []string `mapstructure:"optional" yaml:"optional,omitempty"`
}

// CommandOutcome maps a terminal event type (and, optionally, string
// members of its data) to an HTTP status.
type CommandOutcome struct {
	Type   string            `mapstructure:"type" yaml:"type"`
	When   map[string]string `mapstructure:"when" yaml:"when,omitempty"`
	Status int               `mapstructure:"status" yaml:"status"`
}

// OTel configures trace export (SPEC §10): none unless Endpoint is set.
type OTel struct {
	// Endpoint is the OTLP/HTTP endpoint, e.g. "http://collector:4318".
	Endpoint string `mapstructure:"endpoint"`
	// ServiceName names this process in traces.
	ServiceName string `mapstructure:"service_name"`
}

// DefaultTopicRoutes is kafka.topics by default: the three topics of SPEC
// §2.1 with the v1 routing, so a v1 deployment behaves the same.
func DefaultTopicRoutes() []TopicRoute {
	out := make([]TopicRoute, 0, len(defaultRoutes))
	for _, r := range defaultRoutes {
		out = append(out, TopicRoute{Name: r.Topic, Channels: append([]string(nil), r.Channels...)})
	}
	return out
}

// DefaultCommands is commands by default: the built-in police takedown of
// SPEC §5, declared as in §5.1.
func DefaultCommands() []Command {
	return []Command{{
		Name:         "takedowns",
		Roles:        []string{RolePolice, RoleModerator, RolePartner},
		Topic:        producers.DefaultCommandsTopic,
		Type:         producers.TypeTakedownRequested,
		Key:          "item_id",
		Fields:       CommandFields{Required: []string{"item_id", "reason"}, Optional: []string{"authority_ref"}},
		OutcomeTopic: producers.DefaultEventsTopic,
		Progress:     []string{producers.TypeItemRemoved},
		Outcomes: []CommandOutcome{
			{Type: producers.TypeTakedownConfirmed, Status: 200},
			{Type: producers.TypeTakedownRejected, When: map[string]string{"reason": "not_found"}, Status: 404},
			{Type: producers.TypeTakedownRejected, Status: 422},
		},
		Timeout: takedown.DefaultTimeout,
	}}
}
