package node

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// newDemo builds the demo generator of --demo: reports to the reports
// topic, and posts of the demo catalogue's items to items.posted.
func newDemo(cfg config.Config, p *producers.Producer, log *slog.Logger) *producers.Demo {
	return producers.NewDemo(p, cfg.ReportsTopic(), cfg.Demo.Rate, log).
		WithPosts(config.DemoPostsTopic, demoPlaces)
}

// demoPlaces returns where demo item itemID is posted, from the simulated
// item service's catalogue: each group it is in (posted by its author), and
// each followers' feed it is in (followers-user-42: posted by user-42). The
// author of an item in groups only is derived from its ID.
func demoPlaces(itemID string) []producers.DemoPlace {
	cs, ok := itemsvc.DemoCatalogue().Containers(itemID)
	if !ok {
		return nil
	}
	author := ""
	for _, c := range cs {
		if u, ok := strings.CutPrefix(c.ID, "followers-"); ok && c.Kind == itemsvc.ContainerFollowers {
			author = u
			break
		}
	}
	if author == "" {
		h := fnv.New32a()
		h.Write([]byte(itemID))
		author = fmt.Sprintf("user-%d", 1+h.Sum32()%2000)
	}
	out := make([]producers.DemoPlace, 0, len(cs))
	for _, c := range cs {
		switch c.Kind {
		case itemsvc.ContainerGroup:
			out = append(out, producers.DemoPlace{GroupID: c.ID, AuthorID: author})
		case itemsvc.ContainerFollowers:
			out = append(out, producers.DemoPlace{AuthorID: strings.TrimPrefix(c.ID, "followers-")})
		}
	}
	return out
}
