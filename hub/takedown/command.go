package takedown

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
)

// Command declares one synchronous command (SPEC §5.1): a client's request
// is published as a CloudEvent of Type on Topic, and answered by the first
// Outcomes rule that an event on OutcomeTopic from one of OutcomeSources
// matches. The police takedown is the built-in instance (Takedowns); every
// command runs the same protocol (call).
type Command struct {
	// Name is the path segment: POST /v1/<name>.
	Name string `json:"name"`
	// Roles may call the command (HTTP and WebSocket).
	Roles []auth.Role `json:"roles"`
	// Topic and Type are where the command goes and its CloudEvents type.
	Topic string `json:"topic"`
	Type  string `json:"type"`
	// Key names the required member that is the record key and the
	// event's subject; its value must fit a channel key.
	Key string `json:"key"`
	// Required and Optional are the request body's members, all strings.
	Required []string `json:"required"`
	Optional []string `json:"optional"`
	// OutcomeTopic and OutcomeSources are where trusted answers come from
	// (SPEC §1.1); no sources means DefaultOutcomeSources.
	OutcomeTopic   string   `json:"outcome_topic"`
	OutcomeSources []string `json:"outcome_sources"`
	// Progress are event types shown on corr: and stored, never final.
	Progress []string `json:"progress"`
	// Outcomes map terminal events to HTTP statuses; the first match wins.
	Outcomes []Rule `json:"outcomes"`
	// Timeout is the default wait; zero means Config.Timeout.
	Timeout time.Duration `json:"-"`

	builtin bool  // the v1 takedown: its v1 bodies and frame
	trust   Trust // OutcomeTopic and OutcomeSources
}

// Rule maps a terminal event type, and optionally string members of its
// data, to an HTTP status.
type Rule struct {
	Type   string            `json:"type"`
	When   map[string]string `json:"when,omitempty"`
	Status int               `json:"status"`
}

// TakedownsName is the built-in command's name.
const TakedownsName = "takedowns"

// Takedowns is the built-in declaration of SPEC §5 on the default topics.
func Takedowns() Command {
	return Command{
		Name:         TakedownsName,
		Roles:        []auth.Role{auth.RolePolice, auth.RoleModerator, auth.RolePartner},
		Topic:        "takedown.commands",
		Type:         TypeRequested,
		Key:          "item_id",
		Required:     []string{"item_id", "reason"},
		Optional:     []string{"authority_ref"},
		OutcomeTopic: "takedown.events",
		Progress:     []string{TypeRemoved},
		Outcomes: []Rule{
			{Type: TypeConfirmed, Status: 200},
			{Type: TypeRejected, When: map[string]string{"reason": "not_found"}, Status: 404},
			{Type: TypeRejected, Status: 422},
		},
		Timeout: DefaultTimeout,
	}
}

// Commands is a compiled, checked set of declared commands. It does not
// change once made and is safe for concurrent use.
type Commands struct {
	list   []*Command
	byName map[string]*Command
	// byType lists, per event type, the commands it may answer or move.
	byType map[string][]*Command
}

var (
	commandName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	memberName  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	// reservedNames are /v1/ paths that are not commands.
	reservedNames = []string{"sse", "ws", "session", "commands", "openapi", "healthz", "readyz", "metrics"}
	// reservedMembers are set by the adapter on the command's data or
	// its answer.
	reservedMembers = []string{"correlation_id", "status", "requested_by", "status_url"}
)

// NewCommands checks cmds and compiles them. An error names the command
// and what is wrong with it.
func NewCommands(cmds []Command) (*Commands, error) {
	cs := &Commands{byName: map[string]*Command{}, byType: map[string][]*Command{}}
	var errs []error
	for i := range cmds {
		c := cmds[i]
		c.Roles = slices.Clone(c.Roles)
		c.Required, c.Optional = slices.Clone(c.Required), slices.Clone(c.Optional)
		c.Progress, c.Outcomes = slices.Clone(c.Progress), slices.Clone(c.Outcomes)
		c.OutcomeSources = slices.Clone(c.OutcomeSources)
		if len(c.OutcomeSources) == 0 {
			c.OutcomeSources = DefaultOutcomeSources
		}
		where := fmt.Sprintf("commands[%d]", i)
		if c.Name != "" {
			where = fmt.Sprintf("commands[%d] (%s)", i, c.Name)
		}
		if err := c.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if cs.byName[c.Name] != nil {
			errs = append(errs, fmt.Errorf("%s: the name %q is declared twice", where, c.Name))
			continue
		}
		c.trust = Trust{Topic: c.OutcomeTopic, Sources: c.OutcomeSources}
		c.builtin = c.isBuiltin()
		cs.list = append(cs.list, &c)
		cs.byName[c.Name] = &c
		for _, t := range c.types() {
			if !slices.Contains(cs.byType[t], &c) {
				cs.byType[t] = append(cs.byType[t], &c)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cs, nil
}

// check says what is wrong with a declaration.
func (c *Command) check() error {
	switch {
	case !commandName.MatchString(c.Name):
		return fmt.Errorf("name %q must be 1 to 64 characters of a-z 0-9 _ -, starting with a letter", c.Name)
	case slices.Contains(reservedNames, c.Name):
		return fmt.Errorf("name %q is a path of the API already", c.Name)
	case len(c.Roles) == 0:
		return errors.New("roles: at least one role may call it")
	case c.Topic == "" || c.Type == "":
		return errors.New("topic and type are required")
	case c.OutcomeTopic == "":
		return errors.New("outcome_topic is required")
	case c.Key == "" || !slices.Contains(c.Required, c.Key):
		return fmt.Errorf("key %q must be one of fields.required", c.Key)
	case len(c.Outcomes) == 0:
		return errors.New("outcomes: at least one outcome is required")
	case c.Timeout < 0:
		return errors.New("timeout must not be negative")
	}
	for _, r := range c.Roles {
		if r != auth.RolePolice && r != auth.RoleModerator && r != auth.RolePartner {
			return fmt.Errorf("roles: unknown role %q (police, moderator or partner)", r)
		}
	}
	seen := map[string]bool{}
	for _, f := range slices.Concat(c.Required, c.Optional) {
		switch {
		case !memberName.MatchString(f):
			return fmt.Errorf("fields: %q must be 1 to 64 characters of a-z 0-9 _, starting with a letter", f)
		case slices.Contains(reservedMembers, f):
			return fmt.Errorf("fields: %q is set by Switchboard", f)
		case seen[f]:
			return fmt.Errorf("fields: %q is listed twice", f)
		}
		seen[f] = true
	}
	for _, p := range c.Progress {
		if p == "" || p == c.Type {
			return fmt.Errorf("progress: %q cannot be a progress type", p)
		}
	}
	for j, o := range c.Outcomes {
		switch {
		case o.Type == "" || o.Type == c.Type:
			return fmt.Errorf("outcomes[%d]: type %q cannot be an outcome", j, o.Type)
		case slices.Contains(c.Progress, o.Type):
			return fmt.Errorf("outcomes[%d]: %s is a progress type too", j, o.Type)
		case o.Status < 200 || o.Status > 599 || (o.Status >= 300 && o.Status < 400):
			return fmt.Errorf("outcomes[%d]: status %d must be 2xx, 4xx or 5xx", j, o.Status)
		}
	}
	return nil
}

// isBuiltin reports whether c is the takedown of SPEC §5, which keeps its
// v1 bodies, frame and doors.
func (c *Command) isBuiltin() bool {
	return c.Name == TakedownsName && c.Type == TypeRequested && c.Key == "item_id" &&
		slices.Equal(c.Required, []string{"item_id", "reason"}) &&
		(len(c.Optional) == 0 || slices.Equal(c.Optional, []string{"authority_ref"}))
}

// types are the event types that may move c: progress and outcomes.
func (c *Command) types() []string {
	out := slices.Clone(c.Progress)
	for _, o := range c.Outcomes {
		if !slices.Contains(out, o.Type) {
			out = append(out, o.Type)
		}
	}
	return out
}

// terminal reports whether typ may be c's outcome.
func (c *Command) terminal(typ string) bool {
	for i := range c.Outcomes {
		if c.Outcomes[i].Type == typ {
			return true
		}
	}
	return false
}

// moves reports whether an event of type typ may move c.
func (c *Command) moves(typ string) bool { return c.terminal(typ) || slices.Contains(c.Progress, typ) }

// rule returns the first outcome rule an event of type typ whose data
// members member gives matches, or nil.
func (c *Command) rule(typ string, member func(string) string) *Rule {
	for i := range c.Outcomes {
		r := &c.Outcomes[i]
		if r.Type != typ {
			continue
		}
		ok := true
		for k, v := range r.When {
			if member(k) != v {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// StatusURL is where a call of c is read.
func (c *Command) StatusURL(id string) string { return "/v1/" + c.Name + "/" + id }

// timeout is c's default wait.
func (c *Command) timeout(def time.Duration) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return def
}

// allows reports whether p may call c through a door: HTTP (ws false) or
// the WebSocket. The built-in takedown keeps v1's doors: police over HTTP,
// partners over WebSocket, moderators over both.
func (c *Command) allows(p *auth.Principal, ws bool) bool {
	if p == nil || !slices.Contains(c.Roles, p.Role) {
		return false
	}
	if c.builtin {
		return p.Role == auth.RoleModerator || (ws && p.Role == auth.RolePartner) || (!ws && p.Role == auth.RolePolice)
	}
	return true
}

// HTTPRoles are the roles that may POST c.
func (c *Command) HTTPRoles() []auth.Role {
	var out []auth.Role
	for _, r := range c.Roles {
		if c.allows(&auth.Principal{Role: r}, false) {
			out = append(out, r)
		}
	}
	return out
}

// List returns the commands in declaration order.
func (cs *Commands) List() []*Command { return slices.Clone(cs.list) }

// Lookup returns the command named name, or nil.
func (cs *Commands) Lookup(name string) *Command { return cs.byName[name] }

// ofRecord returns the command of rec: its Command, the takedown when
// empty; nil when it is not declared (any more).
func (cs *Commands) ofRecord(rec *Record) *Command {
	if rec.Command == "" {
		return cs.byName[TakedownsName]
	}
	return cs.byName[rec.Command]
}

// judge is the Recorder's check of an event against the record it names:
// the record's command must be moved by the event's type, and the event
// must come from that command's outcome topic and sources.
func (cs *Commands) judge(rec *Record, ev *hub.Event) (*Command, error) {
	c := cs.ofRecord(rec)
	if c == nil || !c.moves(ev.Type) {
		return nil, &UntrustedError{Reason: ReasonUnknown}
	}
	if err := c.trust.check(ev, true); err != nil {
		return nil, err
	}
	return c, nil
}

// builtinTakedowns is the takedown Store.Apply folds events into: the
// stores' own Apply trusts its caller (Recorder checks topic and source).
var builtinTakedowns = func() *Commands {
	cs, err := NewCommands([]Command{Takedowns()})
	if err != nil {
		panic(err)
	}
	return cs
}()

func applyTakedown(*Record, *hub.Event) (*Command, error) {
	return builtinTakedowns.list[0], nil
}

// input is a validated request of a command: its members as a JSON
// object, the key's value, and a hash that tells two requests apart.
type input struct {
	cmd  *Command
	key  string
	data json.RawMessage // generic commands: the members, as sent
	req  *Request        // the built-in takedown's body
	hash string          // a generic command's; the takedown's is its req's (bodyHash)
	// body is the built-in takedown's body, which req points to: the
	// input and its request are one allocation.
	body Request
}

// maxMember bounds a member's value.
const maxMember = 2000

// decode reads and checks body, a JSON object of exactly c's members
// (strings), for a declared command.
func (c *Command) decode(body []byte) (*input, error) {
	var raw map[string]json.RawMessage
	if err := hub.DecodeStrict(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: the body is a JSON object of the string members %s", err, c.members())
	}
	if raw == nil {
		return nil, errors.New("the body must be a JSON object")
	}
	// An unknown member is named as such, whatever its value.
	m := make(map[string]string, len(raw))
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !slices.Contains(c.Required, k) && !slices.Contains(c.Optional, k) {
			return nil, fmt.Errorf("%w: unknown member %q: the members are %s", hub.ErrBadJSON, hub.Clip(k, 64), c.members())
		}
		var v string
		if err := json.Unmarshal(raw[k], &v); err != nil || string(raw[k]) == "null" {
			return nil, fmt.Errorf("%w: member %q must be a string: the body is a JSON object of the string members %s", hub.ErrBadJSON, k, c.members())
		}
		m[k] = v
	}
	return c.accept(m)
}

// read decodes and checks a request body (or a call frame's data): the
// built-in takedown's as in v1, a declared command's as exactly its
// members.
func (c *Command) read(body []byte) (*input, error) {
	if !c.builtin {
		return c.decode(body)
	}
	in := &input{cmd: c} // the body is decoded into it: one allocation for both
	if err := hub.DecodeStrict(body, &in.body); err != nil {
		return nil, fmt.Errorf("%w: the body is a JSON object of item_id, reason and authority_ref", err)
	}
	return in.takedown()
}

func (c *Command) members() string {
	return strings.Join(slices.Concat(c.Required, c.Optional), ", ")
}

func (c *Command) accept(m map[string]string) (*input, error) {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !slices.Contains(c.Required, k) && !slices.Contains(c.Optional, k) {
			return nil, fmt.Errorf("%w: unknown member %q: the members are %s", hub.ErrBadJSON, hub.Clip(k, 64), c.members())
		}
		if len(m[k]) > maxMember {
			return nil, fmt.Errorf("%q is over %d characters", k, maxMember)
		}
	}
	for _, k := range c.Required {
		if strings.TrimSpace(m[k]) == "" {
			return nil, fmt.Errorf("%q is required", k)
		}
	}
	key := m[c.Key]
	if err := hub.ValidateChannel("item:" + key); err != nil {
		return nil, fmt.Errorf("%q must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -", c.Key)
	}
	h := sha256.New()
	for _, k := range slices.Concat(c.Required, c.Optional) {
		v, ok := m[k]
		if !ok {
			continue
		}
		h.Write([]byte(k + "\x00" + v + "\x00"))
	}
	data, _ := json.Marshal(m) // sorted members
	return &input{cmd: c, key: key, data: data, hash: hex.EncodeToString(h.Sum(nil))}, nil
}

// takedownInput is the input of a v1 takedown request.
func takedownInput(c *Command, req *Request) (*input, error) {
	in := &input{cmd: c, body: *req}
	return in.takedown()
}

// takedown checks in.body, the built-in takedown's request of in.cmd, and
// completes in from it.
func (in *input) takedown() (*input, error) {
	c, req := in.cmd, &in.body
	if err := req.validate(); err != nil {
		return nil, err
	}
	if req.AuthorityRef != "" && !slices.Contains(c.Optional, "authority_ref") {
		return nil, fmt.Errorf("%w: unknown member %q", hub.ErrBadJSON, "authority_ref")
	}
	in.key, in.req = req.ItemID, req // the hash when a record needs it (bodyHash)
	return in, nil
}

// bodyHash is the hash that tells two requests apart.
func (in *input) bodyHash() string {
	if in.req != nil {
		return in.req.hash()
	}
	return in.hash
}
