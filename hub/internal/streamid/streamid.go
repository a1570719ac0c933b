// Package streamid is the SSE stream id: the position of every channel of
// a stream and the keys of the newest events it sent, as base64url of
// "channel|epoch.offset;...;~key,key" (offsets and keys in base 36). A
// browser's Last-Event-ID holds it, so a stream resumes every channel, on
// any node, without a duplicate.
package streamid

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Pos is a place in one channel's log: hub.Position, which converts to it.
type Pos struct {
	Epoch  string
	Offset uint64
}

// Cursor is the position of every channel of a stream, kept as parallel
// sorted slices, so encoding it for every event allocates nothing beyond
// the output.
type Cursor struct {
	names []string
	pos   []Pos
	raw   []byte
}

// New returns the cursor of the channels sorted names, each at the zero
// position.
func New(sorted []string) Cursor {
	return Cursor{names: sorted, pos: make([]Pos, len(sorted))}
}

// Advance moves ch to p unless ch is already at or past p in the same
// epoch; it reports whether it moved (true for a channel not in the
// stream).
func (c *Cursor) Advance(ch string, p Pos) bool {
	i, ok := slices.BinarySearch(c.names, ch)
	if !ok {
		return true
	}
	if cur := c.pos[i]; cur.Epoch == p.Epoch && cur.Offset >= p.Offset {
		return false
	}
	c.pos[i] = p
	return true
}

// Follow moves ch to p only when p is the very next position of ch, so no
// event of ch between them is skipped.
func (c *Cursor) Follow(ch string, p Pos) {
	if i, ok := slices.BinarySearch(c.names, ch); ok {
		if cur := c.pos[i]; cur.Epoch == p.Epoch && cur.Offset+1 == p.Offset {
			c.pos[i] = p
		}
	}
}

// Set moves ch to p.
func (c *Cursor) Set(ch string, p Pos) {
	if i, ok := slices.BinarySearch(c.names, ch); ok {
		c.pos[i] = p
	}
}

// AppendEncoded appends the stream id: the positions, then the keys of
// the newest events sent, if any.
func (c *Cursor) AppendEncoded(dst []byte, recent []uint64) []byte {
	raw := c.raw[:0]
	for i, ch := range c.names {
		if i > 0 {
			raw = append(raw, ';')
		}
		raw = append(raw, ch...)
		raw = append(raw, '|')
		raw = append(raw, c.pos[i].Epoch...)
		raw = append(raw, '.')
		raw = strconv.AppendUint(raw, c.pos[i].Offset, 36)
	}
	for i, h := range recent {
		if i == 0 {
			raw = append(raw, ";~"...)
		} else {
			raw = append(raw, ',')
		}
		raw = strconv.AppendUint(raw, h, 36)
	}
	c.raw = raw
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

// Part is one channel's part of a decoded stream id, not yet validated.
type Part struct {
	Channel, Cursor string
}

// Errors of Decode.
var (
	ErrNotBase64  = errors.New("stream cursor is not base64url")
	ErrBadKeys    = errors.New("stream cursor has bad event keys")
	ErrBadChannel = errors.New("stream cursor names a bad channel")
)

// Decode splits a stream id of at most maxLen bytes into its channels'
// parts and the keys of the newest events (at most RecentKeys).
func Decode(s string, maxLen int) ([]Part, []uint64, error) {
	if len(s) > maxLen {
		return nil, nil, fmt.Errorf("stream cursor longer than %d bytes", maxLen)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, nil, ErrNotBase64
	}
	if len(raw) == 0 {
		return nil, nil, nil
	}
	var parts []Part
	var recent []uint64
	for part := range strings.SplitSeq(string(raw), ";") {
		if keys, ok := strings.CutPrefix(part, "~"); ok {
			for k := range strings.SplitSeq(keys, ",") {
				h, err := strconv.ParseUint(k, 36, 64)
				if err != nil || len(recent) == RecentKeys {
					return nil, nil, ErrBadKeys
				}
				recent = append(recent, h)
			}
			continue
		}
		ch, pos, ok := strings.Cut(part, "|")
		if !ok {
			return nil, nil, ErrBadChannel
		}
		parts = append(parts, Part{Channel: ch, Cursor: pos})
	}
	return parts, recent, nil
}

// RecentKeys is how many of the newest event keys a multi-channel stream's
// id carries: the events whose copies on the stream's other channels may
// not have reached the client when it dropped.
const RecentKeys = 4

// KeyRing remembers the last n event keys, as FNV-1a hashes: stable across
// processes, so the most recent ones can travel in the stream's id and be
// remembered again by whichever node the stream resumes on.
type KeyRing struct {
	max    int
	ring   []uint64
	next   int
	set    map[uint64]struct{}
	recent [RecentKeys]uint64 // the newest first
	nrec   int
}

// NewKeyRing returns a ring of n keys. It grows as events flow: an idle
// stream holds almost nothing.
func NewKeyRing(n int) *KeyRing {
	return &KeyRing{max: n, set: make(map[uint64]struct{})}
}

// Add reports whether the event key hash h is new, and remembers it.
func (k *KeyRing) Add(h uint64) bool {
	if _, ok := k.set[h]; ok {
		return false
	}
	if len(k.ring) < k.max {
		k.ring = append(k.ring, h)
	} else {
		delete(k.set, k.ring[k.next])
		k.ring[k.next] = h
		k.next = (k.next + 1) % len(k.ring)
	}
	k.set[h] = struct{}{}
	copy(k.recent[1:], k.recent[:RecentKeys-1])
	k.recent[0] = h
	k.nrec = min(k.nrec+1, RecentKeys)
	return true
}

// Newest returns the newest keys, newest first; none for a nil ring.
func (k *KeyRing) Newest() []uint64 {
	if k == nil {
		return nil
	}
	return k.recent[:k.nrec]
}
