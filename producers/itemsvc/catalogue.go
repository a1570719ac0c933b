package itemsvc

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/switchboard/switchboard/producers"
)

// Container kinds: where an item can be posted.
const (
	// ContainerGroup is a group's board; its IDs look like group-7.
	ContainerGroup = "group"
	// ContainerFollowers is the feed of a user's followers; its IDs look
	// like followers-user-42.
	ContainerFollowers = "followers"
)

// Sizes of the demo world the catalogue's containers come from.
const (
	demoGroups = 50
	demoUsers  = 2000
)

// Container is one place an item was posted to.
type Container struct {
	// ID names the container, like group-7 or followers-user-42.
	ID string
	// Kind is ContainerGroup or ContainerFollowers.
	Kind string
}

// Catalogue says which items exist and where each was posted, so the item
// service knows what to remove and what to reject. A Catalogue does not
// change after it is made and is safe for concurrent use.
type Catalogue struct {
	items map[string][]Container
}

// NewCatalogue returns a catalogue of the given items, each with the
// containers it was posted to. It copies items.
func NewCatalogue(items map[string][]Container) *Catalogue {
	c := &Catalogue{items: make(map[string][]Container, len(items))}
	for id, cs := range items {
		c.items[id] = slices.Clone(cs)
	}
	return c
}

// DemoCatalogue returns the demo catalogue of SPEC §6: items item-1 …
// item-1000 (producers.DemoItems), each posted to one to three distinct containers.
// The containers are derived from the item number alone, so every node and
// every run agrees on them without sharing any state.
func DemoCatalogue() *Catalogue { return demoCatalogue() }

var demoCatalogue = sync.OnceValue(func() *Catalogue {
	c := &Catalogue{items: make(map[string][]Container, producers.DemoItems)}
	for n := 1; n <= producers.DemoItems; n++ {
		c.items[fmt.Sprintf("item-%d", n)] = demoContainers(uint64(n))
	}
	return c
})

// demoContainers derives the containers of demo item n: 1 + h%3 of them,
// each a group or a followers' feed picked by a hash of (n, i). Changing
// this changes the demo world, which the catalogue test pins down.
func demoContainers(n uint64) []Container {
	want := 1 + int(splitmix64(n)%3)
	out := make([]Container, 0, want)
	for i := uint64(1); len(out) < want; i++ {
		h := splitmix64(n<<16 | i)
		var c Container
		if h&1 == 0 {
			c = Container{ID: fmt.Sprintf("group-%d", 1+(h>>1)%demoGroups), Kind: ContainerGroup}
		} else {
			c = Container{ID: fmt.Sprintf("followers-user-%d", 1+(h>>1)%demoUsers), Kind: ContainerFollowers}
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// splitmix64 is the SplitMix64 finaliser: a fixed, well-mixed hash of x
// that does not depend on the Go version or the process.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Containers returns the containers itemID was posted to, in a fixed order,
// and whether the item is in the catalogue. The slice is the caller's.
func (c *Catalogue) Containers(itemID string) ([]Container, bool) {
	cs, ok := c.items[itemID]
	if !ok {
		return nil, false
	}
	return slices.Clone(cs), true
}

// Len returns how many items the catalogue holds.
func (c *Catalogue) Len() int { return len(c.items) }

// Items returns the IDs of the catalogue's items, sorted.
func (c *Catalogue) Items() []string {
	return slices.Sorted(maps.Keys(c.items))
}
