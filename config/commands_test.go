package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTopicRoutesAndDemo(t *testing.T) {
	c := wantDefaults()
	if got := c.TopicRoutes(); !reflect.DeepEqual(got, DefaultTopicRoutes()) {
		t.Errorf("TopicRoutes = %+v, want the defaults", got)
	}
	if got, want := c.Topics(), []string{"items.reported", "takedown.commands", "takedown.events", "switchboard.dlq"}; !slices.Equal(got, want) {
		t.Errorf("Topics = %v, want %v", got, want)
	}

	c.Demo.Enabled = true
	got := c.TopicRoutes()
	if len(got) != 4 || !reflect.DeepEqual(got[3], DemoRoute()) {
		t.Fatalf("with demo.enabled TopicRoutes = %+v, want the defaults and DemoRoute", got)
	}
	if r := DemoRoute(); r.Name != "items.posted" || !slices.Equal(r.Channels, []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"}) ||
		!slices.Equal(r.Types, []string{"item.posted", "item.updated"}) {
		t.Errorf("DemoRoute = %+v, not SPEC §2.1's example", r)
	}
	if got := c.Routes(); len(got) != 4 || got[3].Topic != "items.posted" || !slices.Equal(got[3].Types, DemoRoute().Types) {
		t.Errorf("Routes = %+v", got)
	}
	if got := c.Topics(); !slices.Contains(got, "items.posted") {
		t.Errorf("Topics = %v, want items.posted for the embedded broker", got)
	}
	// A configured items.posted wins over the demo's.
	mine := TopicRoute{Name: "items.posted", Channels: []string{"posts"}}
	c.Kafka.Topics = append(c.Kafka.Topics, mine)
	if got := c.TopicRoutes(); len(got) != 4 || !reflect.DeepEqual(got[3], mine) {
		t.Errorf("TopicRoutes = %+v, want the configured items.posted only", got)
	}
	// The result is the caller's.
	got = c.TopicRoutes()
	got[0].Channels[0] = "changed"
	if c.Kafka.Topics[0].Channels[0] != "reports" {
		t.Error("TopicRoutes shares its slices with the configuration")
	}
}

func TestCommandAccessors(t *testing.T) {
	c := wantDefaults()
	cmd, ok := c.Command("takedowns")
	if !ok || !reflect.DeepEqual(cmd, DefaultCommands()[0]) {
		t.Fatalf("Command(takedowns) = %+v, %v", cmd, ok)
	}
	cmd.Outcomes[1].When["reason"] = "changed"
	if c.Commands[0].Outcomes[1].When["reason"] != "not_found" {
		t.Error("Command shares its maps with the configuration")
	}
	if _, ok := c.Command("holds"); ok {
		t.Error("Command(holds) found")
	}
	if cmds, outs := c.TakedownTopics(); cmds != "takedown.commands" || outs != "takedown.events" {
		t.Errorf("TakedownTopics = %s, %s", cmds, outs)
	}
	c.Commands[0].Topic, c.Commands[0].OutcomeTopic = "police.commands", "police.outcomes"
	if cmds, outs := c.TakedownTopics(); cmds != "police.commands" || outs != "police.outcomes" {
		t.Errorf("TakedownTopics = %s, %s, want the takedowns command's", cmds, outs)
	}
	if got := c.Topics(); !slices.Contains(got, "police.commands") || !slices.Contains(got, "police.outcomes") {
		t.Errorf("Topics = %v, want the command's topics", got)
	}
	c.Commands = nil
	if cmds, outs := c.TakedownTopics(); cmds != "takedown.commands" || outs != "takedown.events" {
		t.Errorf("without a takedowns command TakedownTopics = %s, %s, want the defaults", cmds, outs)
	}
}

func TestReportsTopic(t *testing.T) {
	c := wantDefaults()
	if got := c.ReportsTopic(); got != "items.reported" {
		t.Errorf("ReportsTopic = %s", got)
	}
	c.Kafka.Topics[0].Name = "platform.reports"
	if got := c.ReportsTopic(); got != "platform.reports" {
		t.Errorf("ReportsTopic = %s, want the topic routed to reports", got)
	}
	c.Kafka.Topics = c.Kafka.Topics[1:]
	if got := c.ReportsTopic(); got != "items.reported" {
		t.Errorf("ReportsTopic = %s, want the default without a reports route", got)
	}
}

// TestDefaultsFileWithLists: a file of WriteDefaults with a list changed
// by hand (a topic added, the command's timeout changed) loads as edited.
func TestDefaultsFileWithLists(t *testing.T) {
	clearEnv(t)
	_, out := writeDefaultsFile(t)
	edited := out
	for _, r := range [][2]string{
		{"  dlq: \"switchboard.dlq\"\n", "    - name: \"items.posted\"\n      types: [\"item.posted\"]\n      channels: [\"group:{data.group_id}\"]\n  dlq: \"switchboard.dlq\"\n"},
		{"      - {type: \"takedown.rejected\", status: 422}\n", "      - {type: \"takedown.rejected\", status: 422}\n    timeout: 20s\n"},
	} {
		if strings.Count(edited, r[0]) != 1 {
			t.Fatalf("%q is not in the defaults file exactly once", r[0])
		}
		edited = strings.Replace(edited, r[0], r[1], 1)
	}
	c, err := Load(writeFile(t, edited), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := wantDefaults()
	want.Kafka.Topics = append(want.Kafka.Topics, TopicRoute{Name: "items.posted", Types: []string{"item.posted"}, Channels: []string{"group:{data.group_id}"}})
	want.Commands[0].Timeout = 20 * time.Second
	if !reflect.DeepEqual(c.Kafka.Topics, want.Kafka.Topics) || !reflect.DeepEqual(c.Commands, want.Commands) {
		t.Errorf("loaded\n%+v\n%+v\nwant\n%+v\n%+v", c.Kafka.Topics, c.Commands, want.Kafka.Topics, want.Commands)
	}
}
