package hub

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard/switchboard/hub/internal/streamid"
)

// Position is a place in one channel's log: the log's epoch and the offset of
// an event in it. Offsets start at 1; offset 0 is the position before the
// first event. Offsets compare only within one epoch: the epoch changes
// whenever the log's continuity is lost (a memory backplane restarted, Redis
// data flushed).
type Position struct {
	Epoch  string
	Offset uint64
}

// Limits on cursors, which come from outside.
const (
	maxEpochLen        = 32
	maxStreamCursorLen = 8 << 10
)

// EpochOf names an epoch after v: lower-case letters and digits, valid in
// a cursor. A backplane starts a log's epoch from a value no earlier epoch
// of that log had (a hash of the log and its generation, or random bits).
func EpochOf(v uint64) string {
	return strconv.FormatUint(v, 36)
}

// String encodes p as an opaque, URL-safe cursor: "<epoch>.<offset base 36>".
func (p Position) String() string {
	return p.Epoch + "." + strconv.FormatUint(p.Offset, 36)
}

// ParseCursor decodes a cursor made by Position.String.
func ParseCursor(s string) (Position, error) {
	epoch, off, ok := strings.Cut(s, ".")
	if !ok || !validEpoch(epoch) || len(off) == 0 || len(off) > 13 {
		return Position{}, fmt.Errorf("%w: %q", ErrBadCursor, Clip(s, clipName))
	}
	n, err := strconv.ParseUint(off, 36, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadCursor, Clip(s, clipName))
	}
	return Position{Epoch: epoch, Offset: n}, nil
}

func validEpoch(e string) bool {
	if len(e) == 0 || len(e) > maxEpochLen {
		return false
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// StreamCursor is the position of every channel of one SSE stream. It is sent
// as the SSE id of every event, so a browser's Last-Event-ID always holds the
// whole stream's position.
type StreamCursor map[string]Position

// Encode renders the cursor as URL-safe base64 of "channel|epoch.offset;...",
// channels sorted so equal cursors encode equally.
func (c StreamCursor) Encode() string {
	names := slices.Sorted(maps.Keys(c))
	cur := streamid.New(names)
	for ch, p := range c {
		cur.Set(ch, streamid.Pos(p))
	}
	return string(cur.AppendEncoded(nil, nil))
}

// ParseStreamCursor decodes a StreamCursor. It refuses oversized input and
// anything that does not decode to valid channels and positions.
func ParseStreamCursor(s string) (StreamCursor, error) {
	c, _, err := parseStreamCursor(s)
	return c, err
}

// parseStreamCursor decodes a stream id: the positions, and the keys of the
// newest events the stream sent (streamid.RecentKeys at most).
func parseStreamCursor(s string) (StreamCursor, []uint64, error) {
	parts, recent, err := streamid.Decode(s, maxStreamCursorLen)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
	}
	c := StreamCursor{}
	for _, part := range parts {
		if ValidateChannel(part.Channel) != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrBadCursor, streamid.ErrBadChannel)
		}
		p, err := ParseCursor(part.Cursor)
		if err != nil {
			return nil, nil, err
		}
		c[part.Channel] = p
	}
	return c, recent, nil
}
