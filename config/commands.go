package config

import (
	"maps"
	"slices"
	"time"

	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/tracing"
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
	// means takedown.outcome_sources.
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
		// Zero: takedown.timeout, so that key keeps setting the
		// takedown's wait.
	}}
}

// DefaultServiceName is otel.service_name by default.
const DefaultServiceName = tracing.DefaultServiceName

// DemoPostsTopic is where the demo generator posts items (SPEC §2.1's
// example); demo.enabled routes it when kafka.topics does not name it.
const DemoPostsTopic = producers.DemoPostsTopic

// DemoRoute is the route demo.enabled adds when kafka.topics has no
// DemoPostsTopic: posts and updates fanned out to the item's group, its
// author's followers' feed and the item.
func DemoRoute() TopicRoute {
	return TopicRoute{
		Name:     DemoPostsTopic,
		Types:    []string{producers.TypeItemPosted, producers.TypeItemUpdated},
		Channels: []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"},
	}
}

// TopicRoutes returns the routes the hub consumes: kafka.topics, plus
// DemoRoute when demo.enabled is set and kafka.topics does not name its
// topic. The slices are the caller's.
func (c Config) TopicRoutes() []TopicRoute {
	out := cloneRoutes(c.Kafka.Topics)
	if c.Demo.Enabled {
		if _, ok := c.Route(DemoPostsTopic); !ok {
			out = append(out, DemoRoute())
		}
	}
	return out
}

// Route returns the entry of kafka.topics for topic.
func (c Config) Route(topic string) (TopicRoute, bool) {
	for _, r := range c.Kafka.Topics {
		if r.Name == topic {
			return cloneRoutes([]TopicRoute{r})[0], true
		}
	}
	return TopicRoute{}, false
}

// Command returns the declared command called name.
func (c Config) Command(name string) (Command, bool) {
	for _, cmd := range c.Commands {
		if cmd.Name == name {
			return cloneCommands([]Command{cmd})[0], true
		}
	}
	return Command{}, false
}

// TakedownCommand is the name of the built-in police takedown command.
const TakedownCommand = "takedowns"

// TakedownTopics returns the topic the takedown command is published to
// and the topic its outcomes are read from: those of the "takedowns"
// command, or the default topics when it is not declared.
func (c Config) TakedownTopics() (commands, outcomes string) {
	if cmd, ok := c.Command(TakedownCommand); ok {
		return cmd.Topic, cmd.OutcomeTopic
	}
	return producers.DefaultCommandsTopic, producers.DefaultEventsTopic
}

// ReportsTopic returns the topic item.reported events go to (the demo
// generator's): the first of kafka.topics with a "reports" channel, else
// the default reports topic.
func (c Config) ReportsTopic() string {
	for _, r := range c.Kafka.Topics {
		if slices.Contains(r.Channels, "reports") {
			return r.Name
		}
	}
	return producers.DefaultReportsTopic
}

// Topics returns every topic the deployment uses, each once: those
// consumed (TopicRoutes), those of the commands and their outcomes, and
// kafka.dlq. The embedded broker creates them.
func (c Config) Topics() []string {
	var out []string
	add := func(t string) {
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, r := range c.TopicRoutes() {
		add(r.Name)
	}
	for _, cmd := range c.Commands {
		add(cmd.Topic)
		add(cmd.OutcomeTopic)
	}
	add(c.Kafka.DLQ)
	return out
}

func cloneRoutes(rs []TopicRoute) []TopicRoute {
	if rs == nil {
		return nil
	}
	out := make([]TopicRoute, len(rs))
	for i, r := range rs {
		out[i] = TopicRoute{Name: r.Name, Types: slices.Clone(r.Types), Channels: slices.Clone(r.Channels)}
	}
	return out
}

func cloneCommands(cs []Command) []Command {
	if cs == nil {
		return nil
	}
	out := make([]Command, len(cs))
	for i, c := range cs {
		c.Roles = slices.Clone(c.Roles)
		c.Fields = CommandFields{Required: slices.Clone(c.Fields.Required), Optional: slices.Clone(c.Fields.Optional)}
		c.OutcomeSources = slices.Clone(c.OutcomeSources)
		c.Progress = slices.Clone(c.Progress)
		outcomes := make([]CommandOutcome, len(c.Outcomes))
		for j, o := range c.Outcomes {
			o.When = maps.Clone(o.When)
			outcomes[j] = o
		}
		if c.Outcomes == nil {
			outcomes = nil
		}
		c.Outcomes = outcomes
		out[i] = c
	}
	return out
}

// Routes returns TopicRoutes as the consumer's routes.
func (c Config) Routes() []consumers.Route {
	rs := c.TopicRoutes()
	out := make([]consumers.Route, len(rs))
	for i, r := range rs {
		out[i] = consumers.Route{Topic: r.Name, Types: r.Types, Channels: r.Channels}
	}
	return out
}
