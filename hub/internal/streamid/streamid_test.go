package streamid

import (
	"slices"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	c := New([]string{"a", "b:x"})
	c.Set("a", Pos{"e1", 7})
	if c.Advance("a", Pos{"e1", 7}) {
		t.Fatal("advanced to where it is")
	}
	c.Follow("b:x", Pos{"e2", 1}) // another epoch: not the next position
	if !c.Advance("b:x", Pos{"", 1}) {
		t.Fatal("did not advance")
	}
	id := string(c.AppendEncoded(nil, []uint64{36, 1}))
	parts, recent, err := Decode(id, 1<<10)
	want := []Part{{"a", "e1.7"}, {"b:x", ".1"}}
	if err != nil || !slices.Equal(parts, want) || !slices.Equal(recent, []uint64{36, 1}) {
		t.Fatalf("decoded %v %v %v, want %v", parts, recent, err, want)
	}
	for _, bad := range []string{"!!", "eHg", "fjE7fjI7fjM7fjQ7fjU"} { // not base64, "xx", five keys
		if _, _, err := Decode(bad, 1<<10); err == nil {
			t.Errorf("Decode(%q) succeeded", bad)
		}
	}
}

func TestKeyRing(t *testing.T) {
	k := NewKeyRing(2)
	if !k.Add(1) || !k.Add(2) || k.Add(1) {
		t.Fatal("a key seen twice is new")
	}
	k.Add(3) // forgets 1
	if !k.Add(1) {
		t.Fatal("the ring kept more than its size")
	}
	if got := k.Newest(); !slices.Equal(got, []uint64{1, 3, 2, 1}) {
		t.Fatalf("newest %v", got)
	}
	var none *KeyRing
	if none.Newest() != nil {
		t.Fatal("a nil ring has keys")
	}
}
