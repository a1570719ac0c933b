package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/switchboard/switchboard/consumers"
)

// routes checks kafka.topics (SPEC §2.1): at least one topic, each named
// once with a valid Kafka topic name that is not kafka.dlq, non-empty
// types, and at least one channel template, each valid.
func (v *validator) routes(c Config) {
	if len(c.Kafka.Topics) == 0 {
		v.fail("kafka.topics", "needs at least one topic: the hub would consume nothing")
	}
	seen := map[string]int{}
	for i, r := range c.Kafka.Topics {
		k := fmt.Sprintf("kafka.topics[%d]", i)
		what := fmt.Sprintf(" (topic %q)", r.Name)
		v.topic(k+".name", r.Name)
		if j, dup := seen[r.Name]; dup && r.Name != "" {
			v.fail(k+".name", "topic %q is also kafka.topics[%d]; name each topic once", r.Name, j)
		} else {
			seen[r.Name] = i
		}
		if r.Name == c.Kafka.DLQ && r.Name != "" {
			v.fail(k+".name", "topic %q is also kafka.dlq", r.Name)
		}
		for j, t := range r.Types {
			if strings.TrimSpace(t) == "" {
				v.fail(fmt.Sprintf("%s.types[%d]", k, j), "must be a non-empty event type%s", what)
			}
		}
		if len(r.Channels) == 0 {
			v.fail(k+".channels", "needs at least one channel template%s", what)
		}
		for j, t := range r.Channels {
			if err := consumers.CheckTemplate(t); err != nil {
				v.fail(fmt.Sprintf("%s.channels[%d]", k, j), "%s%s", err, what)
			}
		}
	}
}

// ReservedCommandNames are the paths under /v1/ that are not commands, so
// no command may be named after one.
var ReservedCommandNames = []string{"sse", "ws", "session", "commands", "sdk"}

var commandNameRe = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// commands checks the declared commands (SPEC §5.1). Each message names
// the key and the command.
func (v *validator) commands(c Config) {
	names := map[string]int{}
	for i, cmd := range c.Commands {
		k := fmt.Sprintf("commands[%d]", i)
		what := fmt.Sprintf(" (command %q)", cmd.Name)
		switch j, dup := names[cmd.Name]; {
		case !commandNameRe.MatchString(cmd.Name):
			v.fail(k+".name", "%q is not a path segment of 1 to 64 of [a-z0-9-]", cmd.Name)
		case dup:
			v.fail(k+".name", "%q is also commands[%d]", cmd.Name, j)
		case slices.Contains(ReservedCommandNames, cmd.Name):
			v.fail(k+".name", "%q is a built-in route, /v1/%s; reserved: %s", cmd.Name, cmd.Name, strings.Join(ReservedCommandNames, ", "))
		default:
			names[cmd.Name] = i
		}
		if len(cmd.Roles) == 0 {
			v.fail(k+".roles", "needs at least one role%s: nobody could call it", what)
		}
		for j, r := range cmd.Roles {
			v.oneOfWhat(fmt.Sprintf("%s.roles[%d]", k, j), r, what, RoleModerator, RolePartner, RolePolice)
		}
		if cmd.Topic == "" {
			v.fail(k+".topic", "must not be empty%s", what)
		} else {
			v.topic(k+".topic", cmd.Topic)
		}
		if strings.TrimSpace(cmd.Type) == "" {
			v.fail(k+".type", "must not be empty%s", what)
		}
		switch {
		case cmd.Key == "":
			v.fail(k+".key", "must not be empty%s", what)
		case !slices.Contains(cmd.Fields.Required, cmd.Key):
			v.fail(k+".key", "%q is not in fields.required%s: every command needs its key", cmd.Key, what)
		}
		v.commandFields(k, what, cmd.Fields)
		switch {
		case cmd.OutcomeTopic == "":
			v.fail(k+".outcome_topic", "must not be empty%s", what)
		case !slices.ContainsFunc(c.Kafka.Topics, func(r TopicRoute) bool { return r.Name == cmd.OutcomeTopic }):
			v.fail(k+".outcome_topic", "%q is not one of kafka.topics%s: its outcomes would never be read", cmd.OutcomeTopic, what)
		}
		for j, src := range cmd.OutcomeSources {
			if _, err := url.Parse(src); err != nil || strings.TrimSpace(src) == "" {
				v.fail(fmt.Sprintf("%s.outcome_sources[%d]", k, j), "%q is not a URI reference%s", src, what)
			}
		}
		for j, p := range cmd.Progress {
			if strings.TrimSpace(p) == "" {
				v.fail(fmt.Sprintf("%s.progress[%d]", k, j), "must be a non-empty event type%s", what)
			}
		}
		if len(cmd.Outcomes) == 0 {
			v.fail(k+".outcomes", "needs at least one outcome%s: no request could ever be answered", what)
		}
		for j, o := range cmd.Outcomes {
			ok := fmt.Sprintf("%s.outcomes[%d]", k, j)
			switch {
			case strings.TrimSpace(o.Type) == "":
				v.fail(ok+".type", "must not be empty%s", what)
			case slices.Contains(cmd.Progress, o.Type):
				v.fail(ok+".type", "%q is also in progress%s: an event type is progress or an outcome, not both", o.Type, what)
			}
			if o.Status < 200 || o.Status > 599 {
				v.fail(ok+".status", "%d is not an HTTP status from 200 to 599%s", o.Status, what)
			}
			for f := range o.When {
				if f == "" {
					v.fail(ok+".when", "a member name must not be empty%s", what)
				}
			}
		}
		if cmd.Timeout < 0 {
			v.fail(k+".timeout", "must not be negative, got %s%s", cmd.Timeout, what)
		}
	}
}

// commandFields checks a command's fields: non-empty names, each once.
func (v *validator) commandFields(k, what string, f CommandFields) {
	seen := map[string]string{}
	check := func(list string, names []string) {
		for j, n := range names {
			key := fmt.Sprintf("%s.fields.%s[%d]", k, list, j)
			if strings.TrimSpace(n) == "" {
				v.fail(key, "must not be empty%s", what)
				continue
			}
			if other, dup := seen[n]; dup {
				v.fail(key, "%q is also %s%s", n, other, what)
				continue
			}
			seen[n] = key
		}
	}
	check("required", f.Required)
	check("optional", f.Optional)
}

// otel checks otel.*: an endpoint, when set, is an http(s) URL.
func (v *validator) otel(o OTel) {
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail("otel.endpoint", "%q is not an OTLP/HTTP URL like http://collector:4318", o.Endpoint)
		}
	}
	if strings.TrimSpace(o.ServiceName) == "" {
		v.fail("otel.service_name", "must not be empty")
	}
}

func (v *validator) oneOfWhat(key, s, what string, allowed ...string) {
	if !slices.Contains(allowed, s) {
		v.fail(key, "%q is not one of %s%s", s, strings.Join(allowed, ", "), what)
	}
}
