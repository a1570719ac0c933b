package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// demoRestoresName is the demo's second command (SPEC §5.1).
const demoRestoresName = "restores"

// demoRestores declares the demo's restores command: POST /v1/restores
// puts an item back where it was posted, answered by the simulated item
// service on item.events.
func demoRestores() config.Command {
	return config.Command{
		Name:         demoRestoresName,
		Roles:        []string{config.RolePolice, config.RoleModerator, config.RolePartner},
		Topic:        producers.DemoItemCommandsTopic,
		Type:         producers.TypeItemRestore,
		Key:          "item_id",
		Fields:       config.CommandFields{Required: []string{"item_id"}, Optional: []string{"reason"}},
		OutcomeTopic: producers.DemoItemEventsTopic,
		Outcomes: []config.CommandOutcome{
			{Type: producers.TypeItemRestored, Status: http.StatusOK},
			{Type: producers.TypeItemRestoreRejected, When: map[string]string{"reason": "not_found"}, Status: http.StatusNotFound},
			{Type: producers.TypeItemRestoreRejected, Status: http.StatusUnprocessableEntity},
		},
	}
}

// withCommands declares cmds besides the configuration's (tests).
func withCommands(cmds ...config.Command) Option {
	return func(a *Node) { a.extraCommands = append(a.extraCommands, cmds...) }
}

// declaredCommands is the running configuration's commands: commands
// (the built-in takedowns by default; a declaration without
// outcome_sources or timeout takes takedown.outcome_sources and
// takedown.timeout), then any declared by an Option, then, with --demo,
// restores unless one is declared.
func (a *Node) declaredCommands() []config.Command {
	return declaredCommands(a.cfg, a.extraCommands)
}

// declaredCommands is Node.declaredCommands for a configuration and the
// commands an Option added (none outside tests).
func declaredCommands(cfg config.Config, extra []config.Command) []config.Command {
	cmds := slices.Clone(cfg.Commands)
	if cmds == nil {
		cmds = config.DefaultCommands()
	}
	for i := range cmds {
		if len(cmds[i].OutcomeSources) == 0 {
			cmds[i].OutcomeSources = cfg.Takedown.OutcomeSources
		}
		if cmds[i].Timeout == 0 {
			cmds[i].Timeout = cfg.Takedown.Timeout
		}
	}
	cmds = append(cmds, extra...)
	if cfg.Demo.Enabled && !slices.ContainsFunc(cmds, func(c config.Command) bool { return c.Name == demoRestoresName }) {
		cmds = append(cmds, demoRestores())
	}
	return cmds
}

// compileCommands turns declarations into the adapter's commands; an
// error names the declaration at fault.
func compileCommands(cmds []config.Command) (*takedown.Commands, error) {
	out := make([]takedown.Command, 0, len(cmds))
	for _, c := range cmds {
		roles := make([]auth.Role, 0, len(c.Roles))
		for _, r := range c.Roles {
			roles = append(roles, auth.Role(r))
		}
		rules := make([]takedown.Rule, 0, len(c.Outcomes))
		for _, o := range c.Outcomes {
			rules = append(rules, takedown.Rule{Type: o.Type, When: o.When, Status: o.Status})
		}
		out = append(out, takedown.Command{
			Name: c.Name, Roles: roles, Topic: c.Topic, Type: c.Type, Key: c.Key,
			Required: c.Fields.Required, Optional: c.Fields.Optional,
			OutcomeTopic: c.OutcomeTopic, OutcomeSources: c.OutcomeSources,
			Progress: c.Progress, Outcomes: rules, Timeout: c.Timeout,
		})
	}
	cs, err := takedown.NewCommands(out)
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	return cs, nil
}

// commandRoutes are consumer routes for the topics of declared commands
// that no route reads yet: each command's topic and outcome topic, to
// item:{subject} and corr:{correlationid}, so its outcomes reach the
// outcome store and its callers.
func commandRoutes(routes []consumers.Route, cmds *takedown.Commands) []consumers.Route {
	routed := func(topic string) bool {
		return slices.ContainsFunc(routes, func(r consumers.Route) bool { return r.Topic == topic })
	}
	for _, c := range cmds.List() {
		for _, topic := range []string{c.Topic, c.OutcomeTopic} {
			if !routed(topic) {
				routes = append(routes, consumers.Route{Topic: topic,
					Channels: []string{"item:" + consumers.PlaceholderSubject, "corr:" + consumers.PlaceholderCorrelationID}})
			}
		}
	}
	return routes
}

// commandView is one command as GET /v1/commands shows it.
type commandView struct {
	Name         string          `json:"name"`
	Roles        []auth.Role     `json:"roles"`
	Path         string          `json:"path"`
	Topic        string          `json:"topic"`
	Type         string          `json:"type"`
	Key          string          `json:"key"`
	Fields       commandFields   `json:"fields"`
	OutcomeTopic string          `json:"outcome_topic"`
	Progress     []string        `json:"progress"`
	Outcomes     []takedown.Rule `json:"outcomes"`
	Timeout      string          `json:"timeout"`
}

type commandFields struct {
	Required []string `json:"required"`
	Optional []string `json:"optional"`
}

// listCommands serves GET /v1/commands: the running configuration's
// commands.
func (a *Node) listCommands(w http.ResponseWriter, _ *http.Request) {
	list := a.takedowns.Commands().List()
	out := make([]commandView, 0, len(list))
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	for _, c := range list {
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = a.cfg.Takedown.Timeout
		}
		out = append(out, commandView{
			Name: c.Name, Roles: c.Roles, Path: "/v1/" + c.Name, Topic: c.Topic, Type: c.Type, Key: c.Key,
			Fields:       commandFields{Required: nonNil(c.Required), Optional: nonNil(c.Optional)},
			OutcomeTopic: c.OutcomeTopic, Progress: nonNil(c.Progress), Outcomes: c.Outcomes, Timeout: timeout.String(),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"commands": out})
}

// commandTopics are the declared commands' topics, for the embedded
// broker to create.
func commandTopics(cmds []config.Command) []string {
	var out []string
	for _, c := range cmds {
		for _, t := range []string{c.Topic, c.OutcomeTopic} {
			if t != "" && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}
